//! The record of what `setup` did, found in place, would do (`--dry-run`), or left undone:
//! nothing is half-done silently.

use serde::Serialize;

/// What became of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Looked at and fine (sign-in, the resource): nothing to change.
    Ok,
    /// Changed something in Azure or on disk.
    Done,
    /// Already right; nothing changed.
    Kept,
    /// Would change something (dry run).
    Planned,
    /// Not needed for this kind of run.
    Skipped,
    /// Refused or failed; see the refusal.
    Failed,
    /// Not reached because an earlier step failed.
    Remaining,
}

impl Status {
    /// The tag in the text summary.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Done => "DONE",
            Self::Kept => "KEPT",
            Self::Planned => "PLAN",
            Self::Skipped => "SKIP",
            Self::Failed => "FAIL",
            Self::Remaining => "TODO",
        }
    }
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `sign-in`, `resource`, `application`, …
    pub name: &'static str,
    /// What became of it.
    pub status: Status,
    /// One line of detail (never a secret).
    pub detail: String,
}

/// The steps so far, in order.
#[derive(Debug, Default)]
pub struct Steps {
    dry_run: bool,
    /// Every step recorded so far.
    pub list: Vec<Step>,
}

impl Steps {
    /// A record for a run that changes things, or only plans (`dry_run`).
    pub fn new(dry_run: bool) -> Self {
        Self {
            dry_run,
            list: Vec::new(),
        }
    }

    /// Whether writes are only planned (`--dry-run`).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn push(&mut self, name: &'static str, status: Status, detail: impl Into<String>) {
        self.list.push(Step {
            name,
            status,
            detail: detail.into(),
        });
    }

    /// Records something read and found usable.
    pub fn ok(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Ok, detail);
    }

    /// Records a change made.
    pub fn done(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Done, detail);
    }

    /// Records something found already right.
    pub fn kept(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Kept, detail);
    }

    /// Records a change a dry run would make.
    pub fn planned(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Planned, detail);
    }

    /// Records a step this run does not need.
    pub fn skipped(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Skipped, detail);
    }

    /// Records the failed step and every step after it not already recorded as remaining.
    pub fn failed(
        &mut self,
        name: &'static str,
        detail: impl Into<String>,
        after: &[&'static str],
    ) {
        self.push(name, Status::Failed, detail);
        for step in after {
            if !self.list.iter().any(|s| s.name == *step) {
                self.push(step, Status::Remaining, "not run");
            }
        }
    }

    /// Whether anything was changed.
    pub fn changed(&self) -> bool {
        self.list.iter().any(|s| s.status == Status::Done)
    }
}
