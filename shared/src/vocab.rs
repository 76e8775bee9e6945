//! The words the system records and reports, each an enum with one wire spelling: job states,
//! job history events, repository events, run states and error classes. Ledgers, reports, logs,
//! metrics and operator filters all go through these, so a new state is handled everywhere the
//! compiler finds a `match`, and a typo does not compile.

use std::fmt;
use std::str::FromStr;

/// Declares a unit enum with its wire names: `as_str`, `Display`, `FromStr`, serde, and `ALL`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire name (ledgers, reports, metrics, message attributes).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        what: stringify!($name),
                        word: s.to_string(),
                        expected: &[$($wire,)+],
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A word that is not one of an enum's wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {word:?} (expected one of: {})", expected.join(", "))]
pub struct UnknownWord {
    /// Which vocabulary.
    pub what: &'static str,
    /// What was given.
    pub word: String,
    /// The accepted words.
    pub expected: &'static [&'static str],
}

wire_enum! {
    /// Where a job stands. One-machine runs use `succeeded`, `skipped` and `failed`; the fleet
    /// moves `queued → running → succeeded | skipped | superseded | conflict | failed | dead`,
    /// where `failed` is a transient failure whose message will come back, `dead` is in the
    /// dead-letter queue, `superseded` is a late job whose source tag had moved on, and
    /// `conflict` an immutable destination tag that holds another image.
    pub enum JobState {
        /// Planned and on the queue.
        Queued = "queued",
        /// A worker is copying it.
        Running = "running",
        /// Copied.
        Succeeded = "succeeded",
        /// Nothing to do (already up to date) — or, in a dry run, what would be copied.
        Skipped = "skipped",
        /// Failed; see the error class and reason.
        Failed = "failed",
        /// Failed for good and dead-lettered.
        Dead = "dead",
        /// Not copied: the source tag no longer points at the job's digest (a newer job, or
        /// none, owns the tag). Not an error.
        Superseded = "superseded",
        /// Not copied: the destination tag is immutable and holds another image. Recorded, not
        /// retried and not dead-lettered (no replay can fix it): resolve it at the destination
        /// or in the config.
        Conflict = "conflict",
    }
}

impl Default for JobState {
    /// A planned job starts queued.
    fn default() -> Self {
        JobState::Queued
    }
}

impl JobState {
    /// States a job never leaves by itself: the fleet ledger refuses to start or finish it again.
    pub const FINAL: [JobState; 5] = [
        JobState::Succeeded,
        JobState::Skipped,
        JobState::Dead,
        JobState::Superseded,
        JobState::Conflict,
    ];

    /// Whether the job ended for good.
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }
}

wire_enum! {
    /// One entry of a job's history (fleet ledger) and the `Outcome` metric dimension.
    pub enum JobEvent {
        /// Copied.
        Succeeded = "succeeded",
        /// Already up to date.
        Skipped = "skipped",
        /// Failed transiently; it comes back.
        Failed = "failed",
        /// Failed for good; dead-lettered.
        Dead = "dead",
        /// A draining worker gave it back unfinished.
        Released = "released",
        /// An operator moved it out of the dead-letter queue.
        Replayed = "replayed",
        /// A second delivery finished after the job had already ended.
        Duplicate = "duplicate",
        /// The source tag had moved on; the job was not copied.
        Superseded = "superseded",
        /// The destination tag is immutable and holds another image; not copied.
        Conflict = "conflict",
    }
}

impl From<JobState> for JobEvent {
    /// The event that records a job reaching `state` (`queued`/`running` are not events; they
    /// map to the nearest one and are never passed in practice).
    fn from(state: JobState) -> JobEvent {
        match state {
            JobState::Succeeded => JobEvent::Succeeded,
            JobState::Skipped => JobEvent::Skipped,
            JobState::Failed | JobState::Queued | JobState::Running => JobEvent::Failed,
            JobState::Dead => JobEvent::Dead,
            JobState::Superseded => JobEvent::Superseded,
            JobState::Conflict => JobEvent::Conflict,
        }
    }
}

wire_enum! {
    /// What happened to one configured repository pair while planning.
    pub enum RepoEvent {
        /// Listed and planned; the destination already existed.
        Planned = "planned",
        /// The destination repository was created (create mode).
        Created = "created",
        /// Dry run: the destination repository would be created.
        WouldCreate = "would_create",
        /// Skipped: refresh mode and the destination does not exist.
        Skipped = "skipped",
        /// Could not be planned (or some tags could not be resolved); see the reason.
        Failed = "failed",
    }
}

wire_enum! {
    /// Where a run stands.
    pub enum RunState {
        /// Fleet: the planner is still sending jobs.
        Planning = "planning",
        /// Fleet: every job was sent.
        Planned = "planned",
        /// Planning or the run stopped on an error.
        Failed = "failed",
        /// Fleet: the run that groups one day's push events.
        Events = "events",
        /// One machine: copying.
        Running = "running",
        /// One machine: every job ended.
        Finished = "finished",
        /// One machine: stopped by a signal; the jobs recorded are what finished.
        Interrupted = "interrupted",
    }
}

impl Default for RunState {
    /// A new fleet run starts planning.
    fn default() -> Self {
        RunState::Planning
    }
}

wire_enum! {
    /// Why a job (or a repository) failed: the one classification of registry, ECR, SQS and
    /// DynamoDB errors. Transient classes are retried; the others are recorded and, in the fleet,
    /// dead-lettered at once.
    pub enum ErrorClass {
        /// Timeouts, resets, 408/429/5xx, throttling: may work later.
        Transient = "transient",
        /// The job ran past its deadline.
        Timeout = "timeout",
        /// Credentials missing or refused (401/403, AccessDenied).
        Auth = "auth",
        /// The image, blob or repository does not exist (any more).
        NotFound = "not_found",
        /// Bytes that do not hash to their digest.
        DigestMismatch = "digest_mismatch",
        /// The destination tag is immutable and holds another image.
        ImmutableTag = "immutable_tag",
        /// Content this tool does not copy (Docker schema 1, unknown manifest types).
        Unsupported = "unsupported",
        /// Any other refusal (4xx) by a registry or service.
        Rejected = "rejected",
        /// An account or repository quota is used up (ECR's images per repository,
        /// `LimitExceededException`): it works again once the quota is raised or room is made.
        Quota = "quota",
        /// A response that breaks the protocol (bad JSON, missing headers).
        Protocol = "protocol",
        /// Settings that cannot work (missing credential variable, unreadable CA file).
        Setup = "setup",
        /// A queue message that is not a valid job.
        BadMessage = "bad_message",
        /// A well-formed job the current config does not ask for (a repository pair it does
        /// not map, a tag outside the mapping's globs or not a tag at all): forged, foreign or
        /// out of date. Never run.
        RejectedJob = "rejected_job",
    }
}

impl ErrorClass {
    /// Whether the same work may succeed later.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Timeout)
    }

    /// The class of an HTTP status from a registry (after 404 and 401/403 were told apart).
    pub fn of_http_status(status: u16) -> ErrorClass {
        match status {
            408 | 429 | 500..=599 => ErrorClass::Transient,
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            _ => ErrorClass::Rejected,
        }
    }

    /// The class of an AWS service error code (any service): throttling and server faults are
    /// transient, credential and permission errors are `auth`, missing resources `not_found`.
    pub fn of_aws_code(code: &str) -> ErrorClass {
        const THROTTLING: [&str; 9] = [
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "RequestThrottled",
            "RequestThrottledException",
            "TooManyRequestsException",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "SlowDown",
        ];
        const AUTH: [&str; 8] = [
            "AccessDenied",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "InvalidSignatureException",
            "ExpiredToken",
            "ExpiredTokenException",
            "MissingAuthenticationToken",
        ];
        if THROTTLING.contains(&code)
            || code.starts_with("InternalServer")
            || code.starts_with("ServiceUnavailable")
            || code == "InternalFailure"
            || code == "InternalError"
            || code == "TransactionConflictException"
        {
            ErrorClass::Transient
        } else if AUTH.contains(&code) {
            ErrorClass::Auth
        } else if code == "LimitExceededException" || code == "ServiceQuotaExceededException" {
            ErrorClass::Quota
        } else if code.contains("NotFound") || code.contains("NonExistent") {
            ErrorClass::NotFound
        } else {
            ErrorClass::Rejected
        }
    }

    /// The class of any AWS SDK error: no answer at all (timeouts, connection failures, a
    /// response that could not be read) is transient; an answer is classed by its code.
    pub fn of_sdk<E, R>(e: &aws_sdk_sqs::error::SdkError<E, R>) -> ErrorClass
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata,
    {
        use aws_sdk_sqs::error::SdkError;
        match e {
            SdkError::ServiceError(s) => s
                .err()
                .code()
                .map(ErrorClass::of_aws_code)
                .unwrap_or(ErrorClass::Transient),
            SdkError::ConstructionFailure(_) => ErrorClass::Rejected,
            _ => ErrorClass::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_unknown_words_say_what_is_expected() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>().unwrap(), *c);
        }
        let err = "bogus".parse::<ErrorClass>().unwrap_err().to_string();
        assert!(
            err.contains("ErrorClass") && err.contains("not_found"),
            "{err}"
        );
        let back: RepoEvent = serde_json::from_str("\"would_create\"").unwrap();
        assert_eq!(back, RepoEvent::WouldCreate);
    }

    #[test]
    fn final_states_and_transient_classes() {
        assert!(JobState::Dead.is_final() && !JobState::Failed.is_final());
        let transient: Vec<_> = ErrorClass::ALL
            .iter()
            .filter(|c| c.is_transient())
            .collect();
        assert_eq!(transient, [&ErrorClass::Transient, &ErrorClass::Timeout]);
    }

    #[test]
    fn aws_codes_and_http_statuses_are_classed() {
        assert_eq!(
            ErrorClass::of_aws_code("ProvisionedThroughputExceededException"),
            ErrorClass::Transient
        );
        assert_eq!(
            ErrorClass::of_aws_code("InternalServerError"),
            ErrorClass::Transient
        );
        assert_eq!(
            ErrorClass::of_aws_code("AccessDeniedException"),
            ErrorClass::Auth
        );
        assert_eq!(
            ErrorClass::of_aws_code("AWS.SimpleQueueService.NonExistentQueue"),
            ErrorClass::NotFound
        );
        assert_eq!(
            ErrorClass::of_aws_code("ResourceNotFoundException"),
            ErrorClass::NotFound
        );
        assert_eq!(
            ErrorClass::of_aws_code("ValidationException"),
            ErrorClass::Rejected
        );
        assert_eq!(ErrorClass::of_http_status(503), ErrorClass::Transient);
        assert_eq!(ErrorClass::of_http_status(403), ErrorClass::Auth);
        assert_eq!(ErrorClass::of_http_status(400), ErrorClass::Rejected);
    }
}
