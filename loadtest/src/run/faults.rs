//! The faults a run injects into the source registry's answers, by kind.

use super::SLOW_REGISTRY_ANSWER;
use ecr_sync_testkit::proxy::Faults;

/// A kind of fault injected into the source registry's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegistryFault {
    /// The connection closed without an answer.
    Reset,
    /// 500.
    #[value(name = "5xx")]
    ServerError,
    /// 429 without `Retry-After`, as ECR throttles.
    #[value(name = "429")]
    Throttle,
    /// Answered [`SLOW_REGISTRY_ANSWER`] late.
    Slow,
}

impl RegistryFault {
    /// Every kind.
    pub const ALL: [RegistryFault; 4] = [
        RegistryFault::Reset,
        RegistryFault::ServerError,
        RegistryFault::Throttle,
        RegistryFault::Slow,
    ];

    pub(super) fn describe(self) -> String {
        match self {
            RegistryFault::Reset => "resets".into(),
            RegistryFault::ServerError => "5xx".into(),
            RegistryFault::Throttle => "429 without Retry-After".into(),
            RegistryFault::Slow => format!("{} s slow", SLOW_REGISTRY_ANSWER.as_secs()),
        }
    }
}

/// The source proxy's faults: one request in `every` fails, the rate shared evenly by `kinds`
/// (every kind when none was chosen).
pub(super) fn registry_faults(every: u64, kinds: &[RegistryFault]) -> Faults {
    let kinds = chosen(kinds);
    let each = every * kinds.len() as u64;
    let of = |k: RegistryFault| if kinds.contains(&k) { each } else { 0 };
    Faults {
        reset_every: of(RegistryFault::Reset),
        error_every: of(RegistryFault::ServerError),
        throttle_bare_every: of(RegistryFault::Throttle),
        slow_every: of(RegistryFault::Slow),
        slow_by: SLOW_REGISTRY_ANSWER,
        ..Default::default()
    }
}

/// The chosen kinds, or all of them when none was chosen.
pub(super) fn chosen(kinds: &[RegistryFault]) -> &[RegistryFault] {
    if kinds.is_empty() {
        &RegistryFault::ALL
    } else {
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::{registry_faults, RegistryFault};

    #[test]
    fn a_fault_rate_is_shared_by_the_chosen_kinds() {
        let all = registry_faults(20, &[]);
        assert_eq!(
            (
                all.reset_every,
                all.error_every,
                all.throttle_bare_every,
                all.slow_every
            ),
            (80, 80, 80, 80)
        );
        let some = registry_faults(20, &[RegistryFault::Throttle, RegistryFault::Slow]);
        assert_eq!(
            (
                some.reset_every,
                some.error_every,
                some.throttle_bare_every,
                some.slow_every
            ),
            (0, 0, 40, 40)
        );
        assert_eq!(registry_faults(0, &[]).throttle_bare_every, 0);
    }
}
