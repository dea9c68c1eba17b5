//! `onboard-lab load --plot FILE.svg`: a load run as two charts in one SVG, for the people who
//! load-test the service: commands published and outcomes per second over the run, and the
//! distribution of the latency from publish to outcome.

use std::path::Path;

use plotters::prelude::*;

use super::load::Report;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 900;

/// Events per second over the run, in about 60 buckets (at least 10 ms each), as
/// (bucket middle, rate).
fn per_second(times: impl Iterator<Item = f64>, until: f64) -> Vec<(f64, f64)> {
    let width = (until / 60.0).max(0.01);
    let buckets = (until / width).ceil().max(1.0) as usize;
    let mut counts = vec![0u32; buckets];
    for t in times {
        let i = ((t.max(0.0) / width) as usize).min(buckets - 1);
        counts[i] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| ((i as f64 + 0.5) * width, f64::from(c) / width))
        .collect()
}

/// `bins` equal bins from 0 to the largest latency (ms): (from, to, count).
fn distribution(latencies_ms: &[f64], bins: usize) -> Vec<(f64, f64, u32)> {
    let max = latencies_ms.iter().copied().fold(0.0f64, f64::max).max(1.0);
    let width = max / bins as f64;
    let mut counts = vec![0u32; bins];
    for l in latencies_ms {
        let i = ((l / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i as f64 * width, (i + 1) as f64 * width, c))
        .collect()
}

/// Draws `report` to `path` as SVG: throughput over time above, the latency distribution
/// below.
pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let timeline = &report.timeline;
    let end = timeline
        .iter()
        .map(|(p, o)| o.unwrap_or(*p))
        .fold(0.0f64, f64::max)
        .max(0.05);
    let published = per_second(timeline.iter().map(|(p, _)| *p), end);
    let outcomes = per_second(timeline.iter().filter_map(|(_, o)| *o), end);
    let latencies: Vec<f64> = timeline
        .iter()
        .filter_map(|(p, o)| o.map(|o| (o - p).max(0.0) * 1000.0))
        .collect();

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);

    let peak = published
        .iter()
        .chain(&outcomes)
        .map(|(_, c)| *c)
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "Throughput: {} {} commands, {:.0} outcomes/s overall",
                report.published, report.command_type, report.throughput_per_sec
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..peak * 1.1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first publish")
        .y_desc("per second")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(published, &BLUE))
        .map_err(plot_error)?
        .label("commands published")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(outcomes, &RED))
        .map_err(plot_error)?
        .label(format!("{} outcomes", report.outcome_event))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;

    let bins = distribution(&latencies, 40);
    let tallest = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    let right = bins.last().map_or(1.0, |b| b.1);
    let l = &report.latency;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "Latency, publish to outcome: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..right, 0u32..tallest + tallest / 10 + 1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("commands")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(
            bins.iter().map(|(from, to, n)| {
                Rectangle::new([(*from, 0), (*to, *n)], RED.mix(0.6).filled())
            }),
        )
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bucketed_and_latencies_binned() {
        // 60 s in 1 s buckets: two events in the first second, one in the 31st.
        let buckets = per_second([0.1, 0.9, 30.5].into_iter(), 60.0);
        assert_eq!(buckets.len(), 60);
        assert_eq!(buckets[0], (0.5, 2.0));
        assert_eq!(buckets[30], (30.5, 1.0));
        assert_eq!(buckets[1].1, 0.0);
        // A short run gets short buckets: 0.6 s in 10 ms ones, rates per second.
        let short = per_second([0.001, 0.002].into_iter(), 0.6);
        assert_eq!(short.len(), 60);
        assert_eq!(short[0].1, 200.0);
        let bins = distribution(&[1.0, 2.0, 10.0], 10);
        assert_eq!(bins.len(), 10);
        // Width 1 ms: 1 ms in the second bin, 2 ms in the third, the largest in the last.
        assert_eq!((bins[1].2, bins[2].2, bins[9].2), (1, 1, 1));
        assert_eq!(bins.iter().map(|b| b.2).sum::<u32>(), 3);
    }
}
