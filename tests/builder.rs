//! Every BuildError names its field; defaults are the documented ones; no panic anywhere.

mod support;

use std::time::Duration;

use connpool::{Balance, Config, Pool, TestOnBorrow};
use support::faulty::Faulty;

type Tweak = Box<dyn FnOnce(connpool::Builder<Faulty>) -> connpool::Builder<Faulty>>;

fn err(f: impl FnOnce(connpool::Builder<Faulty>) -> connpool::Builder<Faulty>) -> (String, String) {
    let e = f(Pool::builder(Faulty::new())).build().unwrap_err();
    let field = e.field.to_owned();
    let text = e.to_string();
    assert!(text.contains(&field), "the message names the field: {text}");
    (field, text)
}

#[tokio::test]
async fn every_invalid_field_is_a_build_error_naming_it() {
    let year = Duration::from_secs(365 * 24 * 3600);
    let cases: Vec<(&str, Tweak)> = vec![
        ("max_size", Box::new(|b| b.max_size(0))),
        ("max_size", Box::new(|b| b.max_size(10).max_size_limit(5))),
        // Too large on its own: named as max_size, not the default limit that follows it.
        ("max_size", Box::new(|b| b.max_size((1 << 20) + 1))),
        ("max_size_limit", Box::new(|b| b.max_size_limit(0))),
        ("max_size_limit", Box::new(|b| b.max_size_limit(usize::MAX))),
        ("max_idle", Box::new(|b| b.max_size(4).max_idle(5))),
        ("min_idle", Box::new(|b| b.max_size(4).min_idle(5))),
        (
            "min_idle",
            Box::new(|b| b.max_size(4).max_idle(2).min_idle(3)),
        ),
        (
            "connect_timeout",
            Box::new(|b| b.connect_timeout(Duration::ZERO)),
        ),
        (
            "check_timeout",
            Box::new(|b| b.check_timeout(Duration::ZERO)),
        ),
        (
            "idle_timeout",
            Box::new(|b| b.idle_timeout(Some(Duration::ZERO))),
        ),
        (
            "max_lifetime",
            Box::new(|b| b.max_lifetime(Some(Duration::ZERO))),
        ),
        ("keepalive", Box::new(|b| b.keepalive(Some(Duration::ZERO)))),
        // Connections would be closed by the idle timeout before their ping (default 10 min).
        (
            "keepalive",
            Box::new(|b| b.keepalive(Some(Duration::from_secs(600)))),
        ),
        (
            "keepalive",
            Box::new(|b| {
                b.idle_timeout(Some(Duration::from_secs(5)))
                    .keepalive(Some(Duration::from_secs(9)))
            }),
        ),
        ("check_retries", Box::new(|b| b.check_retries(0))),
        ("connect_attempts", Box::new(|b| b.connect_attempts(0))),
        ("backoff_base", Box::new(|b| b.backoff_base(Duration::ZERO))),
        (
            "backoff_max",
            Box::new(|b| {
                b.backoff_base(Duration::from_secs(2))
                    .backoff_max(Duration::from_secs(1))
            }),
        ),
        (
            "maintenance_interval",
            Box::new(|b| b.maintenance_interval(Duration::ZERO)),
        ),
        (
            "wait_timeout",
            Box::new(move |b| b.wait_timeout(Duration::MAX)),
        ),
        (
            "idle_timeout",
            Box::new(move |b| b.idle_timeout(Some(year * 200))),
        ),
        (
            "backoff_base",
            Box::new(move |b| b.backoff_base(year * 200).backoff_max(year * 200)),
        ),
        (
            "test_on_borrow",
            Box::new(|b| b.test_on_borrow(TestOnBorrow::IdleFor(Duration::MAX))),
        ),
    ];
    for (field, f) in cases {
        let (got, text) = err(f);
        assert_eq!(got, field, "{text}");
    }
}

#[test]
fn build_outside_a_runtime_is_an_error_not_a_panic() {
    let e = Pool::builder(Faulty::new()).build().unwrap_err();
    assert_eq!(e.field, "runtime");
    // Validation comes first: an invalid config is reported even outside a runtime.
    let e = Pool::builder(Faulty::new())
        .max_size(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field, "max_size");
}

#[test]
fn build_on_a_runtime_without_timers_is_an_error_not_a_panic() {
    // A runtime built without enable_time()/enable_all(): every timeout, and the background
    // task, would panic at their first timer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt
        .block_on(async { Pool::builder(Faulty::new()).build() })
        .unwrap_err();
    assert_eq!(e.field, "runtime");
    assert!(e.to_string().contains("enable_time"), "{e}");
    // With timers, the same build succeeds.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert!(rt
        .block_on(async { Pool::builder(Faulty::new()).build() })
        .is_ok());
}

#[tokio::test]
async fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.max_size, 10);
    assert_eq!(c.max_idle, None);
    assert_eq!(c.effective_max_size_limit(), 40);
    assert_eq!(c.min_idle, 0);
    assert_eq!(c.wait_timeout, Duration::from_secs(30));
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.check_timeout, Duration::from_secs(2));
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(c.max_lifetime, Some(Duration::from_secs(1800)));
    assert_eq!(
        c.test_on_borrow,
        TestOnBorrow::IdleFor(Duration::from_millis(500))
    );
    assert_eq!(c.keepalive, None);
    assert_eq!(c.check_retries, 3);
    assert_eq!(c.balance, Balance::RoundRobin);
    let pool = Pool::builder(Faulty::new()).name("orders").build().unwrap();
    assert_eq!(pool.config().name, "orders");
    let st = pool.status();
    assert_eq!((st.max_size, st.size), (10, 0), "lazy: opens nothing");
    // The limit default is 4 x max_size.
    assert!(pool.set_max_size(40).is_ok());
    assert!(pool.set_max_size(41).is_err());
}

#[tokio::test]
async fn edge_values_that_are_valid_build() {
    Pool::builder(Faulty::new()).max_size(1).build().unwrap();
    Pool::builder(Faulty::new())
        .max_size(1)
        .min_idle(1)
        .build()
        .unwrap();
    Pool::builder(Faulty::new())
        .wait_timeout(Duration::ZERO)
        .build()
        .unwrap();
    Pool::builder(Faulty::new())
        .idle_timeout(None)
        .max_lifetime(None)
        .keepalive(Some(Duration::from_millis(1)))
        .build()
        .unwrap();
    // Any keepalive without an idle timeout, or below it.
    Pool::builder(Faulty::new())
        .idle_timeout(None)
        .keepalive(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
    Pool::builder(Faulty::new())
        .keepalive(Some(Duration::from_secs(599)))
        .build()
        .unwrap();
    Pool::builder(Faulty::new())
        .max_size(1 << 20)
        .max_size_limit(1 << 20)
        .build()
        .unwrap();
}
