//! The one launch driver of every entry point: the decision's outcome
//! under the policy, the entry point's effect, `on_error` when the effect
//! fails, and the log of what came of it. Only the effect differs between
//! the hook (mounts in the container's namespace), the runtime (the
//! config written), its Slurm mode (the config and the step's wiring) and
//! the SPANK plugin (nothing here: it hands the decision on).

use super::{failed, log, LaunchError, Outcome};
use crate::plan::Plan;
use hpcc_config::Policy;
use std::path::Path;

/// One launch, decided: the policy it was decided under and the plan (or
/// why there is none).
#[derive(Debug)]
pub struct RunInput<'a> {
    /// The policy in force.
    pub policy: &'a Policy,
    /// Where it was read (named by refusal lines).
    pub policy_path: &'a Path,
    /// The container as the user knows it.
    pub id: Option<&'a str>,
    /// This node as the lines name it.
    pub node: Option<&'a str>,
    /// The decision's plan.
    pub planned: Result<Plan, LaunchError>,
}

/// What an entry point does with an outcome that starts (a plan, or an
/// unchecked start): its errors become `on_error`'s outcome.
pub trait Effect {
    /// What the effect gives back (a PMI fd, the runtime's arguments).
    type Output;
    /// Applies the outcome; it may add to the plan (the Slurm wiring)
    /// before the outcome is logged.
    fn apply(&mut self, outcome: &mut Outcome) -> Result<Self::Output, LaunchError>;
    /// Logs the final outcome. The SPANK plugin logs its own summary line
    /// in slurmd's log instead.
    fn log(&self, outcome: &Outcome, id: &str) {
        log(outcome, id);
    }
}

/// An effect that is a closure.
impl<T, F: FnMut(&mut Outcome) -> Result<T, LaunchError>> Effect for F {
    type Output = T;
    fn apply(&mut self, outcome: &mut Outcome) -> Result<T, LaunchError> {
        self(outcome)
    }
}

/// Policy → decision → effect → `on_error` → log. Returns the outcome and
/// what the effect gave (none after a refusal or a failed effect).
pub fn run<E: Effect + ?Sized>(
    input: RunInput<'_>,
    effect: &mut E,
) -> (Outcome, Option<E::Output>) {
    let RunInput {
        policy,
        policy_path,
        id,
        node,
        planned,
    } = input;
    let mut outcome = super::outcome(policy, policy_path, id, node, planned);
    let mut done = None;
    if !matches!(outcome, Outcome::Refuse { .. }) {
        match effect.apply(&mut outcome) {
            Ok(d) => done = Some(d),
            Err(e) => outcome = failed(policy, policy_path, id, node, e),
        }
    }
    effect.log(&outcome, id.unwrap_or_default());
    (outcome, done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_config::OnError;
    use std::cell::Cell;

    fn broken() -> LaunchError {
        LaunchError::input(std::io::Error::other("the bundle is gone"))
    }

    /// Counts the effect's calls and the log's, and fails when told to.
    struct Probe {
        applied: usize,
        logged: Cell<usize>,
        fail: bool,
    }

    impl Effect for Probe {
        type Output = &'static str;
        fn apply(&mut self, _: &mut Outcome) -> Result<&'static str, LaunchError> {
            self.applied += 1;
            if self.fail {
                Err(broken())
            } else {
                Ok("done")
            }
        }
        fn log(&self, _: &Outcome, _: &str) {
            self.logged.set(self.logged.get() + 1);
        }
    }

    fn input(policy: &Policy) -> RunInput<'_> {
        RunInput {
            policy,
            policy_path: Path::new("/etc/hpcc/hook.toml"),
            id: Some("c1"),
            node: Some("n1"),
            planned: Err(broken()),
        }
    }

    fn probe(fail: bool) -> Probe {
        Probe {
            applied: 0,
            logged: Cell::new(0),
            fail,
        }
    }

    #[test]
    fn a_refusal_is_logged_and_never_applied() {
        let policy = Policy::default();
        assert_eq!(policy.on_error, OnError::Refuse);
        let mut p = probe(false);
        let (o, done) = run(input(&policy), &mut p);
        assert!(matches!(o, Outcome::Refuse { .. }), "{o:?}");
        assert_eq!((p.applied, p.logged.get(), done), (0, 1, None));
    }

    #[test]
    fn a_start_is_applied_and_a_failed_effect_follows_on_error() {
        let policy = Policy {
            on_error: OnError::Allow,
            ..Policy::default()
        };
        let mut p = probe(false);
        let (o, done) = run(input(&policy), &mut p);
        assert!(matches!(o, Outcome::StartUnchecked(_)), "{o:?}");
        assert_eq!((p.applied, p.logged.get(), done), (1, 1, Some("done")));
        // The effect fails: on_error's outcome, nothing given back.
        let mut p = probe(true);
        let (o, done) = run(input(&policy), &mut p);
        assert!(matches!(o, Outcome::StartUnchecked(_)), "{o:?}");
        assert_eq!((p.applied, p.logged.get(), done), (1, 1, None));
        // A closure is an effect too.
        let (_, done) = run(input(&policy), &mut |_: &mut Outcome| Ok(7));
        assert_eq!(done, Some(7));
    }
}
