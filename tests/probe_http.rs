//! The HTTP busy probe against real HTTP servers bound on 127.0.0.x.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use kube_standby::api::probe::HttpProbe;
use kube_standby::controller::hsd::plan::BusyState;
use kube_standby::probe::http::HttpProber;

/// Serve `status` on /busy after `delay`, on 127.0.0.<host>; returns the port.
async fn server(host: u8, status: u16, delay: Duration) -> u16 {
    let app = Router::new()
        .route(
            "/busy",
            get(move || async move {
                tokio::time::sleep(delay).await;
                StatusCode::from_u16(status).unwrap()
            }),
        )
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [("location", "/busy")]) }),
        );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.{host}:0"))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn cfg(port: u16, success_is_busy: bool) -> HttpProbe {
    HttpProbe {
        port: port as i32,
        path: "/busy".into(),
        success_is_busy,
        timeout_seconds: 1,
        period_seconds: 10,
    }
}

fn ip(host: u8) -> IpAddr {
    format!("127.0.0.{host}").parse().unwrap()
}

#[tokio::test]
async fn two_xx_and_five_xx_with_both_polarities() {
    let p = HttpProber::new(8);
    let ok = server(2, 200, Duration::ZERO).await;
    let unavailable = server(3, 503, Duration::ZERO).await;
    assert_eq!(p.probe(ip(2), &cfg(ok, true)).await, Ok(BusyState::Busy));
    assert_eq!(
        p.probe(ip(3), &cfg(unavailable, true)).await,
        Ok(BusyState::Idle)
    );
    assert_eq!(p.probe(ip(2), &cfg(ok, false)).await, Ok(BusyState::Idle));
    assert_eq!(
        p.probe(ip(3), &cfg(unavailable, false)).await,
        Ok(BusyState::Busy)
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let p = HttpProber::new(8);
    let port = server(4, 200, Duration::ZERO).await;
    let mut c = cfg(port, true);
    c.path = "/redirect".into();
    // 302 is not 2xx: with successIsBusy the pod is idle, although /busy would say 200.
    assert_eq!(p.probe(ip(4), &c).await, Ok(BusyState::Idle));
}

#[tokio::test]
async fn timeout_is_an_error_within_the_bound() {
    let p = HttpProber::new(8);
    let port = server(5, 200, Duration::from_secs(5)).await;
    let t = Instant::now();
    let err = p.probe(ip(5), &cfg(port, true)).await.unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_slow_server_within_the_timeout_still_counts() {
    let p = HttpProber::new(8);
    let port = server(6, 200, Duration::from_millis(400)).await;
    assert_eq!(p.probe(ip(6), &cfg(port, true)).await, Ok(BusyState::Busy));
}

#[tokio::test]
async fn connection_refused_is_an_error() {
    let p = HttpProber::new(8);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.7:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = p.probe(ip(7), &cfg(port, true)).await.unwrap_err();
    assert!(err.contains("connect"), "{err}");
    let mut bad = cfg(port, true);
    bad.port = 70000;
    assert!(p
        .probe(ip(7), &bad)
        .await
        .unwrap_err()
        .contains("invalid port"));
}

#[tokio::test]
async fn in_flight_probes_are_bounded() {
    // One slot, a slow server: the second probe waits for the slot and times out.
    let p = HttpProber::new(1);
    let port = server(8, 200, Duration::from_millis(900)).await;
    let c = cfg(port, true);
    let (a, b) = tokio::join!(p.probe(ip(8), &c), p.probe(ip(8), &c));
    let results = [a, b];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
}
