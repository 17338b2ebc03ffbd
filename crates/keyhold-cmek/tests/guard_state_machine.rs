//! The key guard's state machine ([C5]–[C7]) against `testing::FakeKms`, a fake KMS whose keys
//! the test switches between usable, disabled, destroyed, permission denied and unreachable.
//! Time is tokio's paused clock (`start_paused`), which the guard's durations and
//! `testing::TokioClock` both follow: a one-hour grace period runs out in no real time.
//!
//! The real KMS behind the same transitions is exercised over HTTP by `keyhold-server`'s store
//! tests; these pin the state machine itself, one transition per test.

use std::sync::Arc;
use std::time::Duration;

use keyhold_api::wire::ProtoDuration;
use keyhold_cmek::testing::{FakeKms, KeyBehaviour, TokioClock};
use keyhold_cmek::{
    Access, CmekWrapper, GuardClock, GuardConfig, GuardError, GuardRegistry, KekWrapper, KeyGuard, SuspensionReason,
    WrappedKek,
};

const KEY: &str = "projects/acme/locations/global/keyRings/r/cryptoKeys/k";
const RESOURCE: &str = "projects/acme/locations/global/instances/orders";
const PERIOD: Duration = Duration::from_secs(300);
const GRACE: Duration = Duration::from_secs(3600);

struct Fixture {
    kms: Arc<FakeKms>,
    guard: Arc<KeyGuard>,
    clock: TokioClock,
    /// The KEK's bytes as made, to compare with what the guard serves after a resume.
    kek: Vec<u8>,
}

/// A guard over one KEK wrapped by `KEY` (usable), not yet checked.
async fn unchecked() -> Fixture {
    unchecked_on(KEY, RESOURCE).await
}

async fn unchecked_on(key: &str, resource: &str) -> Fixture {
    let kms = Arc::new(FakeKms::new());
    kms.set(key, KeyBehaviour::Usable);
    let wrapper: Arc<dyn KekWrapper> = Arc::new(CmekWrapper::new(kms.clone(), key));
    let clock = TokioClock::new();
    let config = GuardConfig { check_period: PERIOD, grace: GRACE };
    let maker = KeyGuard::with_clock(resource, wrapper.clone(), config, [], Arc::new(clock));
    let (kek, wrapped) = maker.new_kek().await.unwrap();
    let guard = KeyGuard::with_clock(resource, wrapper, config, [(1, wrapped)], Arc::new(clock));
    Fixture { kms, guard, clock, kek: kek.expose().to_vec() }
}

/// [`unchecked`], then checked once (usable).
async fn usable() -> Fixture {
    let f = unchecked().await;
    assert_eq!(f.guard.check().await.access, Access::Usable);
    f
}

fn inaccessible(guard: &KeyGuard) -> Access {
    match guard.kek(1) {
        Err(GuardError::Inaccessible { status, .. }) => status.access,
        Err(e) => panic!("expected Inaccessible, got {e}"),
        Ok(_) => panic!("the guard served a KEK"),
    }
}

/// Lets the monitor task run (the test runtime is single-threaded) without letting tokio's
/// paused clock move: time only auto-advances when every task is idle, and this one never is.
async fn run_other_tasks_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

#[tokio::test(start_paused = true)]
async fn nothing_is_served_before_the_first_check_then_the_check_unlocks_the_kek() {
    let f = unchecked().await;
    assert_eq!(f.guard.status().access, Access::Unknown);
    assert_eq!(inaccessible(&f.guard), Access::Unknown);
    assert!(f.guard.require_access().is_err());
    assert_eq!(f.kms.calls(KEY).decrypt, 0);

    let status = f.guard.check().await;
    assert_eq!(status.access, Access::Usable);
    assert_eq!(status.observed_key_state.as_deref(), Some("ENABLED"));
    assert_eq!(status.last_usable, Some(f.clock.now()));
    assert_eq!(f.guard.kek(1).unwrap().expose(), &f.kek[..]);
    assert_eq!(f.kms.calls(KEY).decrypt, 1, "one unwrap per KEK per check");
}

#[tokio::test(start_paused = true)]
async fn unusable_key_suspends_with_kms_key_issue_and_resumes_when_usable_again() {
    // [C5]: each way the KMS can say "this key cannot be used"; [C6]: recovery on the next check.
    for (behaviour, state) in [
        (KeyBehaviour::Disabled, "DISABLED"),
        (KeyBehaviour::Destroyed, "DESTROYED"),
        (KeyBehaviour::PermissionDenied, "PERMISSION_DENIED"),
    ] {
        let f = usable().await;
        f.kms.set(KEY, behaviour);
        let status = f.guard.check().await;
        assert_eq!(status.access, Access::Suspended(SuspensionReason::KmsKeyIssue), "{state}");
        assert_eq!(status.observed_key_state.as_deref(), Some(state));
        assert!(!status.message.is_empty(), "{state}: the KMS's message is kept for display");
        assert_eq!(inaccessible(&f.guard), Access::Suspended(SuspensionReason::KmsKeyIssue), "{state}");
        assert!(f.guard.require_access().is_err());

        // Still unusable on the next check: still suspended, however long it lasts.
        tokio::time::advance(GRACE * 2).await;
        assert_eq!(f.guard.check().await.access, Access::Suspended(SuspensionReason::KmsKeyIssue), "{state}");

        f.kms.set(KEY, KeyBehaviour::Usable);
        let status = f.guard.check().await;
        assert_eq!(status.access, Access::Usable, "{state}: resumes by itself");
        assert_eq!(status.observed_key_state.as_deref(), Some("ENABLED"));
        assert!(status.message.is_empty());
        assert_eq!(f.guard.kek(1).unwrap().expose(), &f.kek[..], "{state}: the same KEK, unwrapped again");
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_after_usable_starts_a_grace_period_counted_from_the_last_usable_check() {
    let f = usable().await;
    let last_usable = f.clock.now();

    tokio::time::advance(Duration::from_secs(600)).await;
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    let status = f.guard.check().await;
    let until = last_usable.add(ProtoDuration::from_nanos(GRACE.as_nanos() as i128));
    assert_eq!(status.access, Access::Grace { until }, "[C7]: grace ends an hour after the last usable check");
    assert_eq!(status.last_usable, Some(last_usable));
    assert_eq!(f.guard.kek(1).unwrap().expose(), &f.kek[..], "cached KEK keeps serving");
    assert!(f.guard.require_access().is_ok());

    // Another failed check later does not extend the grace period.
    tokio::time::advance(Duration::from_secs(1800)).await;
    assert_eq!(f.guard.check().await.access, Access::Grace { until });
    assert!(f.guard.kek(1).is_ok());
}

#[tokio::test(start_paused = true)]
async fn grace_expiry_takes_the_resource_offline_even_without_another_check() {
    let f = usable().await;
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    assert!(matches!(f.guard.check().await.access, Access::Grace { .. }));
    let calls = f.kms.calls(KEY);

    tokio::time::advance(GRACE - Duration::from_secs(1)).await;
    assert!(f.guard.kek(1).is_ok(), "one second before the end: still serving");

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(inaccessible(&f.guard), Access::Suspended(SuspensionReason::KmsUnreachable));
    assert_eq!(f.guard.status().access, Access::Suspended(SuspensionReason::KmsUnreachable));
    assert!(f.guard.require_access().is_err());
    assert_eq!(f.kms.calls(KEY), calls, "time alone ended the grace: no KMS call was made");
}

#[tokio::test(start_paused = true)]
async fn a_check_after_the_grace_suspends_kms_unreachable_and_recovery_resumes() {
    let f = usable().await;
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    tokio::time::advance(GRACE + Duration::from_secs(1)).await;
    let status = f.guard.check().await;
    assert_eq!(status.access, Access::Suspended(SuspensionReason::KmsUnreachable));
    assert_eq!(inaccessible(&f.guard), Access::Suspended(SuspensionReason::KmsUnreachable));

    // The KMS answers again and the key is usable: serving again, the grace clock reset.
    f.kms.set(KEY, KeyBehaviour::Usable);
    assert_eq!(f.guard.check().await.access, Access::Usable);
    assert_eq!(f.guard.kek(1).unwrap().expose(), &f.kek[..]);
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    assert!(matches!(f.guard.check().await.access, Access::Grace { .. }), "a fresh grace period");
}

#[tokio::test(start_paused = true)]
async fn the_kms_answering_after_the_grace_that_the_key_is_unusable_gives_kms_key_issue() {
    let f = usable().await;
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    tokio::time::advance(GRACE + Duration::from_secs(1)).await;
    f.guard.check().await;
    f.kms.set(KEY, KeyBehaviour::Disabled);
    let status = f.guard.check().await;
    assert_eq!(status.access, Access::Suspended(SuspensionReason::KmsKeyIssue));
    assert_eq!(status.observed_key_state.as_deref(), Some("DISABLED"));
}

#[tokio::test(start_paused = true)]
async fn unreachable_after_unusable_gets_no_grace() {
    let f = usable().await;
    f.kms.set(KEY, KeyBehaviour::Disabled);
    assert_eq!(f.guard.check().await.access, Access::Suspended(SuspensionReason::KmsKeyIssue));

    // The key was not usable when the KMS went away: nothing to ride out, nothing served.
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    let status = f.guard.check().await;
    assert_eq!(status.access, Access::Suspended(SuspensionReason::KmsKeyIssue), "still the key's fault");
    assert_eq!(inaccessible(&f.guard), Access::Suspended(SuspensionReason::KmsKeyIssue));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(f.guard.kek(1).is_err());
}

#[tokio::test(start_paused = true)]
async fn unreachable_before_the_first_check_never_serves() {
    let f = unchecked().await;
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    let status = f.guard.check().await;
    assert_eq!(status.access, Access::Suspended(SuspensionReason::KmsUnreachable));
    assert_eq!(inaccessible(&f.guard), Access::Suspended(SuspensionReason::KmsUnreachable));
}

#[tokio::test(start_paused = true)]
async fn the_monitor_rechecks_on_its_period() {
    let f = usable().await;
    let _monitor = f.guard.spawn_monitor();
    f.kms.set(KEY, KeyBehaviour::Destroyed);
    let calls = f.kms.calls(KEY).decrypt;

    // Before the period is up, nothing happens (no notice was sent).
    assert!(!run_other_tasks_until(|| f.kms.calls(KEY).decrypt > calls).await);
    assert_eq!(f.guard.status().access, Access::Usable);

    tokio::time::advance(PERIOD).await;
    assert!(
        run_other_tasks_until(|| f.guard.status().access == Access::Suspended(SuspensionReason::KmsKeyIssue)).await,
        "the periodic check found the destroyed key"
    );
}

#[tokio::test(start_paused = true)]
async fn a_notice_triggers_an_immediate_recheck() {
    let f = usable().await;
    let _monitor = f.guard.spawn_monitor();
    let started = tokio::time::Instant::now();
    f.kms.set(KEY, KeyBehaviour::Disabled);

    f.guard.wake();
    assert!(
        run_other_tasks_until(|| f.guard.status().access == Access::Suspended(SuspensionReason::KmsKeyIssue)).await,
        "woken, the monitor checked at once"
    );
    assert!(started.elapsed() < PERIOD, "not the periodic check");

    // And the other way round: a notice after re-enabling resumes at once.
    f.kms.set(KEY, KeyBehaviour::Usable);
    f.guard.wake();
    assert!(run_other_tasks_until(|| f.guard.status().access == Access::Usable).await);
    assert!(started.elapsed() < PERIOD);
}

#[tokio::test(start_paused = true)]
async fn a_key_change_notice_wakes_only_the_guards_of_that_key() {
    let a = unchecked_on(KEY, RESOURCE).await;
    let other_key = "projects/acme/locations/global/keyRings/r/cryptoKeys/other";
    let b = unchecked_on(other_key, "projects/acme/locations/global/instances/b").await;
    a.guard.check().await;
    b.guard.check().await;
    let registry = GuardRegistry::default();
    registry.insert(a.guard.clone(), "1");
    registry.insert(b.guard.clone(), "1");
    let _ma = a.guard.spawn_monitor();
    let _mb = b.guard.spawn_monitor();
    a.kms.set(KEY, KeyBehaviour::PermissionDenied);
    b.kms.set(other_key, KeyBehaviour::PermissionDenied);
    let b_calls = b.kms.calls(other_key);

    registry.key_may_have_changed(|k| k == KEY);
    assert!(
        run_other_tasks_until(|| a.guard.status().access == Access::Suspended(SuspensionReason::KmsKeyIssue)).await
    );
    assert_eq!(b.kms.calls(other_key), b_calls, "the other key's guard was not woken");
    assert_eq!(b.guard.status().access, Access::Usable);
}

#[tokio::test(start_paused = true)]
async fn a_kek_of_another_resource_does_not_unwrap() {
    // The KEK's wrapping is bound to its resource (associated data): moving it elsewhere is
    // refused by the KMS, and the guard suspends rather than serving.
    let f = unchecked().await;
    let wrapped: Vec<(u64, WrappedKek)> = f.guard.wrapped().into_iter().collect();
    let wrapper: Arc<dyn KekWrapper> = Arc::new(CmekWrapper::new(f.kms.clone(), KEY));
    let config = GuardConfig { check_period: PERIOD, grace: GRACE };
    let elsewhere =
        KeyGuard::with_clock("projects/acme/locations/global/instances/x", wrapper, config, wrapped, Arc::new(f.clock));
    assert_eq!(elsewhere.check().await.access, Access::Suspended(SuspensionReason::KmsKeyIssue));
    assert!(elsewhere.kek(1).is_err());
}

#[tokio::test(start_paused = true)]
async fn while_unreachable_the_monitor_retries_within_seconds_not_a_period() {
    let f = usable().await;
    let _monitor = f.guard.spawn_monitor();
    f.kms.set(KEY, KeyBehaviour::Unavailable);
    f.guard.wake();
    assert!(run_other_tasks_until(|| matches!(f.guard.status().access, Access::Grace { .. })).await);

    // The KMS is back: the next retry (seconds away, not the 5-minute period) resumes service.
    f.kms.set(KEY, KeyBehaviour::Usable);
    let started = tokio::time::Instant::now();
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(run_other_tasks_until(|| f.guard.status().access == Access::Usable).await, "retried after 2 s");
    assert!(started.elapsed() < PERIOD);
}
