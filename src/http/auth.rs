//! The routes' side of authentication: find the request's token (`Authorization: Bearer`,
//! `?token=`, the cookie), ask [`crate::auth::Auth`] who it is (401 `unauthorized` if it
//! cannot say), and check the grant a route needs (403 `forbidden`).

use super::reply::{query_get, query_pairs};
use super::AppState;
use crate::auth::Identity;
use crate::protocol::{ApiError, TopicName};
use warp::http::HeaderValue;
use warp::{Filter, Rejection};

/// A request refused by authentication or a missing grant.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) ApiError);

impl warp::reject::Reject for Refused {}

fn header(
    name: &'static str,
) -> impl Filter<Extract = (Option<HeaderValue>,), Error = std::convert::Infallible> + Clone {
    warp::header::value(name)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// The request's identity, or a 401 rejection.
pub(crate) fn identity(
    state: &AppState,
) -> impl Filter<Extract = (Identity,), Error = Rejection> + Clone {
    let auth = state.auth.clone();
    header("authorization")
        .and(header("cookie"))
        .and(super::raw_query())
        .and_then(
            move |authorization: Option<HeaderValue>, cookie: Option<HeaderValue>, query: String| {
                let auth = auth.clone();
                async move {
                    let refuse = |e: crate::auth::AuthError| warp::reject::custom(Refused(e.to_api()));
                    if !auth.enabled() {
                        return auth.identify(None).await.map_err(refuse);
                    }
                    let text = |v: &Option<HeaderValue>| -> Result<Option<String>, crate::auth::AuthError> {
                        match v {
                            None => Ok(None),
                            Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
                                crate::auth::AuthError::Malformed("a header is not ASCII text".into())
                            }),
                        }
                    };
                    let authorization = text(&authorization).map_err(refuse)?;
                    let cookie = text(&cookie).map_err(refuse)?;
                    let pairs = query_pairs(&query);
                    let token = auth
                        .pick_token(authorization.as_deref(), query_get(&pairs, "token"), cookie.as_deref())
                        .map_err(refuse)?;
                    auth.identify(token.as_deref()).await.map_err(refuse)
                }
            },
        )
}

/// What a route needs for its topic.
#[derive(Clone, Copy)]
pub(crate) enum Need {
    Publish,
    Subscribe,
}

/// Passes the topic through if `id` may use it as `need` says. A name that is not a valid
/// topic is passed on too: the route answers it with `invalid_topic`.
pub(crate) fn check(id: &Identity, topic: &str, need: Need) -> Result<(), Rejection> {
    if TopicName::parse(topic).is_err() {
        return Ok(());
    }
    let allowed = match need {
        Need::Publish => id.may_publish(topic),
        Need::Subscribe => id.may_subscribe(topic),
    };
    allowed.map_err(|e| warp::reject::custom(Refused(e)))
}

/// `route` (which extracts a topic) with its grant checked, before any body is read.
pub(crate) fn grant_topic<F>(
    route: F,
    state: &AppState,
    need: Need,
) -> impl Filter<Extract = (String,), Error = Rejection> + Clone
where
    F: Filter<Extract = (String,), Error = Rejection> + Clone,
{
    granted_topic(route, state, need).map(|topic, _| topic)
}

/// [`grant_topic`], keeping the identity (a stream ends when its token expires).
pub(crate) fn granted_topic<F>(
    route: F,
    state: &AppState,
    need: Need,
) -> impl Filter<Extract = (String, Identity), Error = Rejection> + Clone
where
    F: Filter<Extract = (String,), Error = Rejection> + Clone,
{
    route
        .and(identity(state))
        .and_then(move |topic: String, id: Identity| async move {
            check(&id, &topic, need).map(|_| (topic, id))
        })
        .untuple_one()
}

/// `route` (which extracts a topic and a consumer name) with the subscribe grant checked.
pub(crate) fn grant_consumer<F>(
    route: F,
    state: &AppState,
) -> impl Filter<Extract = (String, String), Error = Rejection> + Clone
where
    F: Filter<Extract = (String, String), Error = Rejection> + Clone,
{
    route
        .and(identity(state))
        .and_then(|topic: String, name: String, id: Identity| async move {
            check(&id, &topic, Need::Subscribe).map(|_| (topic, name))
        })
        .untuple_one()
}

/// Routes for operators: with auth on, a token with `admin: true` (with auth off each such
/// route keeps its own rule).
pub(crate) fn admin_when_checked(
    state: &AppState,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    identity(state)
        .and_then(|id: Identity| async move {
            if id.checked() {
                id.may_administer()
                    .map_err(|e| warp::reject::custom(Refused(e)))?;
            }
            Ok::<_, Rejection>(())
        })
        .untuple_one()
}

/// Any identity: a valid token, or the anonymous grants (with auth off, anyone).
pub(crate) fn signed_in(state: &AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    identity(state).map(|_| ()).untuple_one()
}

/// `?topic=` of a multi-topic stream: all of them must be granted.
pub(crate) fn every_topic(
    state: &AppState,
) -> impl Filter<Extract = (Identity,), Error = Rejection> + Clone {
    identity(state)
        .and(super::raw_query())
        .and_then(|id: Identity, query: String| async move {
            for (k, topic) in query_pairs(&query) {
                if k == "topic" {
                    check(&id, &topic, Need::Subscribe)?;
                }
            }
            Ok::<_, Rejection>(id)
        })
}
