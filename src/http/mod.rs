//! The HTTP layer (warp): routes of `PROTOCOL.md`, each a thin adapter from requests to
//! sessions and topics. Nothing below this module sees a warp type.

mod admin;
mod auth;
mod body;
mod chaos;
mod client_js;
mod conn_io;
mod consumers;
mod cors;
mod info;
mod origin;
mod poll;
mod publish;
mod reply;
mod server;
mod sse;
mod ws;
mod ws_upgrade;

use crate::config::Config;
use crate::session::supervisor::Sessions;
use crate::topic::service::Topics;
use auth::{admin_when_checked, grant_consumer, grant_topic, Need};
use metrics_exporter_prometheus::PrometheusHandle;
pub(crate) use origin::OriginPolicy;
pub(crate) use server::serve;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_util::task::TaskTracker;
use warp::Filter;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub node_id: Arc<str>,
    pub config: Arc<Config>,
    pub topics: Topics,
    pub sessions: Sessions,
    pub metrics: PrometheusHandle,
    /// Long-lived connection tasks (WebSocket), waited for on shutdown.
    pub connections: TaskTracker,
    /// The cluster membership as this node sees it.
    pub view: tokio::sync::watch::Receiver<Arc<crate::cluster::view::View>>,
    /// Fault injection, only with `[chaos] fault_injection = true`.
    pub faults: Option<crate::cluster::faults::Faults>,
    /// Which web origins may change state (`[http] allowed_origins`).
    pub(crate) origins: origin::OriginPolicy,
    /// Who a client is and what it may do (`[auth]`).
    pub(crate) auth: Arc<crate::auth::Auth>,
}

fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Raw query string, empty if there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// One percent-decoded path segment.
fn segment() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    warp::path::param::<String>().map(|s: String| {
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or(s)
    })
}

/// Every route of the protocol.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let s = || with_state(state.clone());
    let body = || body::read(&state.config);

    // Path filters come before method filters, so that an unknown path is a 404 rather
    // than a 405 collected from a route whose method did not match.
    let messages = || {
        warp::path!("v1" / "topics" / ..)
            .and(segment())
            .and(warp::path!("messages"))
    };
    let publish = auth::granted_topic(messages().and(warp::post()), &state, Need::Publish)
        .and(s())
        .and(body())
        .then(publish::publish);
    let poll = grant_topic(messages().and(warp::get()), &state, Need::Subscribe)
        .and(s())
        .and(raw_query())
        .then(poll::poll);
    let topic_sse = warp::path!("v1" / "topics" / ..)
        .and(segment())
        .and(warp::path!("events"))
        .and(warp::get());
    let topic_sse = auth::granted_topic(topic_sse, &state, Need::Subscribe)
        .and(s())
        .and(raw_query())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(warp::ext::optional::<server::ConnHandle>())
        .then(sse::topic_events);
    let multi_sse = warp::path!("v1" / "events")
        .and(warp::get())
        .and(auth::every_topic(&state))
        .and(s())
        .and(raw_query())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(warp::ext::optional::<server::ConnHandle>())
        .then(sse::multi_events);
    let topic_info = warp::path!("v1" / "topics" / ..)
        .and(segment())
        .and(warp::path::end())
        .and(warp::get());
    let topic_info = grant_topic(topic_info, &state, Need::Subscribe)
        .and(s())
        .then(info::topic);
    let consumer = || {
        warp::path!("v1" / "topics" / ..)
            .and(segment())
            .and(warp::path!("consumers" / ..))
            .and(segment())
    };
    let consumer_ack = consumer().and(warp::path!("ack")).and(warp::post());
    let consumer_ack = grant_consumer(consumer_ack, &state)
        .and(s())
        .and(body())
        .then(consumers::ack);
    let consumer_info = consumer().and(warp::path::end()).and(warp::get());
    let consumer_info = grant_consumer(consumer_info, &state)
        .and(s())
        .then(consumers::info);
    let consumer_settings = consumer()
        .and(warp::path::end())
        .and(warp::put())
        .and(admin_when_checked(&state))
        .and(s())
        .and(body())
        .then(consumers::configure);
    let websocket = warp::path!("v1" / "ws")
        .and(ws_upgrade::handshake())
        .and(auth::identity(&state))
        .and(s())
        .map(ws::upgrade);
    let cluster = warp::path!("v1" / "cluster")
        .and(warp::get())
        .and(auth::signed_in(&state))
        .and(s())
        .map(info::cluster);
    let partition = warp::path!("v1" / "chaos" / "partition")
        .and(warp::post())
        .and(admin_when_checked(&state))
        .and(s())
        .and(body())
        .map(chaos::partition);
    let recover = warp::path!("v1" / "admin" / "shards" / u32 / "recover")
        .and(warp::post())
        .and(admin_when_checked(&state))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::ext::optional::<server::Peer>())
        .and(s())
        .then(admin::recover);
    let healthz = warp::path!("healthz").and(warp::get()).map(info::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(s())
        .map(info::readyz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(admin_when_checked(&state))
        .and(s())
        .map(info::metrics);

    let client_js = client_js::routes();
    let routes = origin::guard(&state)
        .and(
            publish
                .or(poll)
                .unify()
                .or(topic_sse)
                .unify()
                .or(multi_sse)
                .unify()
                .or(topic_info)
                .unify()
                .or(consumer_ack)
                .unify()
                .or(consumer_info)
                .unify()
                .or(websocket)
                .unify()
                // Boxed so the combined filter type stays within the compiler's recursion limit.
                .boxed()
                .or(consumer_settings)
                .unify()
                .or(cluster)
                .unify()
                .or(partition)
                .unify()
                .or(recover)
                .unify()
                .or(healthz)
                .unify()
                .or(readyz)
                .unify()
                .or(metrics)
                .unify()
                .or(client_js)
                .unify(),
        )
        .recover(reply::rejection)
        .unify();
    cors::preflight(&state)
        .or(cors::decorate(&state, routes))
        .unify()
}
