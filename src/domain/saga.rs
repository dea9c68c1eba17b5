//! The create-client saga's steps and states, as plain values.

use std::fmt;
use std::str::FromStr;

use super::lifecycle::ParseStatusError;

/// The steps after persisting, in order. `Done` is the resting state of a completed saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Xendit,
    WelcomeEmail,
    Complete,
    Done,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Xendit, Step::WelcomeEmail, Step::Complete, Step::Done];

    /// The spelling in `onboarding_sagas.step` and in events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Xendit => "xendit",
            Step::WelcomeEmail => "welcome_email",
            Step::Complete => "complete",
            Step::Done => "done",
        }
    }

    /// The first step after persisting: Xendit customers for Xendit clients, else the email.
    pub fn first(xendit_client: bool) -> Step {
        if xendit_client {
            Step::Xendit
        } else {
            Step::WelcomeEmail
        }
    }

    /// What comes after this step.
    pub fn next(self) -> Step {
        match self {
            Step::Xendit => Step::WelcomeEmail,
            Step::WelcomeEmail | Step::Complete | Step::Done => Step::Done,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Step {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Step::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| ParseStatusError {
                kind: "saga step",
                value: s.to_owned(),
                expected: "xendit, welcome_email, complete, done",
            })
    }
}

/// Whether a saga still has work to do (`onboarding_sagas.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaStatus {
    Waiting,
    Completed,
}

impl SagaStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Waiting => "waiting",
            SagaStatus::Completed => "completed",
        }
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "waiting" => Ok(SagaStatus::Waiting),
            "completed" => Ok(SagaStatus::Completed),
            _ => Err(ParseStatusError {
                kind: "saga status",
                value: s.to_owned(),
                expected: "waiting, completed",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_and_follow_each_other() {
        for step in Step::ALL {
            assert_eq!(step.as_str().parse::<Step>(), Ok(step));
        }
        assert!("mailing".parse::<Step>().is_err());
        assert_eq!(Step::first(true), Step::Xendit);
        assert_eq!(Step::first(false), Step::WelcomeEmail);
        assert_eq!(Step::Xendit.next(), Step::WelcomeEmail);
        assert_eq!(Step::WelcomeEmail.next(), Step::Done);
    }
}
