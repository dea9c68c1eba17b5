//! The overview's last hour, kept by the console process: commands per minute and outcome
//! (counted from the inbox, whose `received_at` is indexed), the commands and dead-letter
//! queues' depths, and dead letters per minute (the dead-letter queue's rises between two
//! samples). One task samples every `console.sample_seconds` for every session, so a page
//! costs no query of its own for these, however many operators keep it open.
//!
//! On start the whole hour is counted once; then each sample recounts the current minute and
//! the one before it (a command whose transaction began in one minute and committed in the
//! next is counted when it commits), and the older minutes stay as they were. Dead letters
//! per minute exist only from the console's start on, and a replay in the same sample as new
//! dead letters hides as many of them: they are a sign to look, the dead-letter page has the
//! letters.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker;
use crate::broker::topology::{self, Depths, Names};
use crate::configuration::Settings;
use crate::store;

/// Whole minutes the chart shows, before the current one.
pub const MINUTES: usize = 60;

/// How long one broker or database read of a sample may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One minute of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minute {
    pub start: DateTime<Utc>,
    pub succeeded: i64,
    pub refused: i64,
    pub rejected: i64,
    /// Messages that reached the dead-letter queue; `None` when no depth was sampled then.
    pub dead_lettered: Option<i64>,
}

impl Minute {
    fn new(start: DateTime<Utc>) -> Minute {
        Minute {
            start,
            succeeded: 0,
            refused: 0,
            rejected: 0,
            dead_lettered: None,
        }
    }

    pub fn commands(&self) -> i64 {
        self.succeeded + self.refused + self.rejected
    }

    pub fn refusals(&self) -> i64 {
        self.refused + self.rejected
    }
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first: the last [`MINUTES`] whole minutes and the current one.
    minutes: VecDeque<Minute>,
    /// Whether the whole hour has been counted once.
    counted: bool,
    depths: Option<(Depths, DateTime<Utc>)>,
}

/// What the overview shows of the last hour.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The last [`MINUTES`] whole minutes and the current one so far, oldest first (fewer
    /// before the first sample).
    pub minutes: Vec<Minute>,
    /// The queues' depths and when they were read.
    pub depths: Option<(Depths, DateTime<Utc>)>,
}

impl Snapshot {
    /// The last whole minute, whose figures the overview calls "per minute".
    pub fn last(&self) -> Option<&Minute> {
        self.minutes.len().checked_sub(2).map(|i| &self.minutes[i])
    }
}

/// Shared by the sampler and the pages.
#[derive(Debug, Clone, Default)]
pub struct Figures(Arc<Mutex<State>>);

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

impl Figures {
    pub fn snapshot(&self) -> Snapshot {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            minutes: state.minutes.iter().cloned().collect(),
            depths: state.depths,
        }
    }

    /// Where the next count starts: the whole hour the first time, then the minute before
    /// the current one.
    fn count_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let counted = self.0.lock().unwrap_or_else(|e| e.into_inner()).counted;
        let back = if counted { 1 } else { MINUTES as i64 };
        minute_of(now) - TimeDelta::minutes(back)
    }

    /// Makes the buckets of the hour up to `now`'s minute, dropping older ones.
    fn roll(state: &mut State, now: DateTime<Utc>) {
        let current = minute_of(now);
        let first = current - TimeDelta::minutes(MINUTES as i64);
        state.minutes.retain(|m| m.start >= first);
        let mut at = state
            .minutes
            .back()
            .map_or(first, |m| m.start + TimeDelta::minutes(1));
        while at <= current {
            state.minutes.push_back(Minute::new(at));
            at += TimeDelta::minutes(1);
        }
    }

    /// Replaces the counts of every minute from `since` with `rows` (minute, outcome, count).
    fn record_counts(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        rows: &[(DateTime<Utc>, String, i64)],
    ) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::roll(&mut state, now);
        for m in state.minutes.iter_mut().filter(|m| m.start >= since) {
            m.succeeded = 0;
            m.refused = 0;
            m.rejected = 0;
        }
        for (at, outcome, count) in rows {
            let Some(m) = state.minutes.iter_mut().find(|m| m.start == *at) else {
                continue;
            };
            match outcome.as_str() {
                "succeeded" => m.succeeded += count,
                "refused" => m.refused += count,
                _ => m.rejected += count,
            }
        }
        state.counted = true;
    }

    /// Keeps the depths; a rise of the dead-letter queue since the last sample counts as that
    /// many dead letters in this minute.
    fn record_depths(&self, depths: Depths, now: DateTime<Utc>) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::roll(&mut state, now);
        let rise = state
            .depths
            .map_or(0, |(before, _)| depths.dead.saturating_sub(before.dead));
        if let Some(m) = state.minutes.back_mut() {
            m.dead_lettered = Some(m.dead_lettered.unwrap_or(0) + i64::from(rise));
        }
        state.depths = Some((depths, now));
    }
}

/// Samples until `stop`. A read that fails leaves the figures as they were (the page says
/// how old the depths are); the broker connection is made again at the next sample.
pub async fn sample(
    figures: Figures,
    pool: PgPool,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(settings.console.sample_seconds.max(1));
    let names = Names::new(&settings.broker.prefix);
    let mut connection: Option<lapin::Connection> = None;
    loop {
        let now = Utc::now();
        let since = figures.count_from(now);
        match tokio::time::timeout(READ_TIMEOUT, store::inbox::per_minute(&pool, since)).await {
            Ok(Ok(rows)) => figures.record_counts(since, now, &rows),
            Ok(Err(e)) => tracing::warn!(error = %e, "console: commands per minute unread"),
            Err(_) => tracing::warn!("console: commands per minute took too long"),
        }
        if connection.as_ref().is_none_or(|c| !c.status().connected()) {
            connection = match tokio::time::timeout(
                READ_TIMEOUT,
                broker::connect(&settings.broker, "onboard console"),
            )
            .await
            {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "console: broker unreachable");
                    None
                }
                Err(_) => None,
            };
        }
        if let Some(c) = &connection {
            match tokio::time::timeout(READ_TIMEOUT, topology::check(c, &names)).await {
                Ok(Ok(depths)) => figures.record_depths(depths, Utc::now()),
                _ => {
                    tracing::warn!("console: queue depths unread");
                    connection = None;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Some(c) = connection {
        let _ = c.close(200, "console stopping".into()).await;
    }
}

/// The chart of the last hour, drawn on the server: one polyline per series in a
/// `WIDTH` x `HEIGHT` box, minutes left to right, the highest count at the top.
pub struct Chart {
    pub commands: String,
    pub refusals: String,
    pub dead_letters: String,
    /// The count at the top of the box.
    pub top: i64,
}

pub const WIDTH: i64 = 600;
pub const HEIGHT: i64 = 160;

impl Chart {
    pub fn of(minutes: &[Minute]) -> Chart {
        let top = minutes
            .iter()
            .flat_map(|m| [m.commands(), m.refusals(), m.dead_lettered.unwrap_or(0)])
            .max()
            .unwrap_or(0)
            .max(1);
        // The current minute at the right edge, whatever the count of minutes.
        let offset = (MINUTES + 1).saturating_sub(minutes.len()) as i64;
        let line = |value: &dyn Fn(&Minute) -> Option<i64>| {
            minutes
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let v = value(m)?;
                    let x = (offset + i as i64) * WIDTH / MINUTES as i64;
                    let y = HEIGHT - v * HEIGHT / top;
                    Some(format!("{x},{y}"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        Chart {
            commands: line(&|m| Some(m.commands())),
            refusals: line(&|m| Some(m.refusals())),
            dead_letters: line(&|m| m.dead_lettered),
            top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        // 1_800_000_000 is a whole minute (a multiple of 60).
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
            + TimeDelta::minutes(minute)
            + TimeDelta::seconds(second)
    }

    fn depths(dead: u32) -> Depths {
        Depths { commands: 0, dead }
    }

    #[test]
    fn the_first_count_covers_the_hour_and_later_ones_recount_two_minutes() {
        let figures = Figures::default();
        let now = at(100, 30);
        assert_eq!(figures.count_from(now), at(40, 0));
        figures.record_counts(
            at(40, 0),
            now,
            &[
                (at(40, 0), "succeeded".into(), 5),
                (at(99, 0), "succeeded".into(), 7),
                (at(99, 0), "refused".into(), 2),
                (at(99, 0), "rejected".into(), 1),
                (at(100, 0), "succeeded".into(), 3),
            ],
        );
        let snap = figures.snapshot();
        assert_eq!(snap.minutes.len(), MINUTES + 1);
        assert_eq!(snap.minutes[0].start, at(40, 0));
        assert_eq!(snap.minutes[0].succeeded, 5);
        assert_eq!(
            snap.minutes[MINUTES].succeeded, 3,
            "the current minute so far"
        );
        let last = snap.last().unwrap();
        assert_eq!(
            (last.start, last.commands(), last.refusals()),
            (at(99, 0), 10, 3)
        );

        // A minute later: minute 99 is recounted (a late commit), minute 40 leaves the hour.
        let now = at(101, 5);
        assert_eq!(figures.count_from(now), at(100, 0));
        figures.record_counts(at(100, 0), now, &[(at(100, 0), "succeeded".into(), 4)]);
        let snap = figures.snapshot();
        assert_eq!(snap.minutes.len(), MINUTES + 1);
        assert_eq!(snap.minutes[0].start, at(41, 0));
        assert_eq!(
            snap.minutes[MINUTES - 2].commands(),
            10,
            "older minutes stay"
        );
        assert_eq!(snap.last().unwrap().succeeded, 4, "not 3 + 4");
    }

    #[test]
    fn dead_letters_are_the_queue_rises_between_samples() {
        let figures = Figures::default();
        figures.record_depths(depths(10), at(0, 10));
        figures.record_depths(depths(13), at(0, 20));
        figures.record_depths(depths(12), at(0, 30)); // one replayed
        figures.record_depths(depths(14), at(0, 40));
        figures.record_depths(depths(14), at(1, 0));
        let snap = figures.snapshot();
        assert_eq!(snap.last().unwrap().dead_lettered, Some(5));
        assert_eq!(snap.depths.unwrap().0.dead, 14);
        let before: Vec<_> = snap.minutes.iter().rev().skip(2).take(3).collect();
        assert!(
            before.iter().all(|m| m.dead_lettered.is_none()),
            "not sampled then"
        );
    }

    #[test]
    fn the_chart_puts_the_newest_minute_on_the_right_and_the_highest_count_on_top() {
        let mut minutes: Vec<Minute> = (0..3).map(|i| Minute::new(at(i, 0))).collect();
        minutes[1].succeeded = 8;
        minutes[2].refused = 4;
        minutes[2].dead_lettered = Some(2);
        let chart = Chart::of(&minutes);
        assert_eq!(chart.top, 8);
        let right = WIDTH;
        assert!(
            chart.commands.ends_with(&format!("{right},{}", HEIGHT / 2)),
            "{}",
            chart.commands
        );
        assert!(
            chart.commands.contains(&format!(",{}", 0)),
            "the top: {}",
            chart.commands
        );
        assert_eq!(
            chart.dead_letters,
            format!("{right},{}", HEIGHT - HEIGHT / 4)
        );
        assert_eq!(Chart::of(&[]).top, 1);
    }
}
