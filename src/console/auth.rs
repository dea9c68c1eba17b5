//! Logins, sessions and CSRF.
//!
//! - A session is a random 32-byte token in an HttpOnly, SameSite=Strict cookie (Secure unless
//!   `console.insecure_cookies`); PostgreSQL keeps only its SHA-256, with the user, an expiry
//!   and the session's own CSRF token.
//! - Every page but `/login`, `/healthz` and the stylesheet needs a session ([`require_session`]:
//!   303 to `/login` without one). Every change is a POST whose form carries the session's CSRF
//!   token ([`Change`], the extractor every action takes: 403 without the right one, and 403
//!   for a viewer).
//! - The login form carries a token of its own, checked against a cookie set with the form
//!   (double submit), so a third-party page cannot log a browser in.
//! - A wrong password and an unknown user get the same 401 page; from the sixth failed try in a
//!   minute for one user name or one address, 429 (counted in PostgreSQL, so every console
//!   process sees the same count).

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::state::Console;
use crate::store::console::{self as db, Session};

const SESSION_COOKIE: &str = "onboard_session";
const LOGIN_CSRF_COOKIE: &str = "onboard_login_csrf";
/// Failed tries a minute, per user name or per address, before 429.
const MAX_FAILURES_PER_MINUTE: i64 = 5;

/// 32 random bytes, base64url.
fn token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(console: &Console, name: &str, value: &str, max_age_secs: u64) -> String {
    let secure = if console.settings.console.insecure_cookies {
        ""
    } else {
        "; Secure"
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}")
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    csrf_token: &'a str,
    error: Option<&'a str>,
    username: &'a str,
}

fn login_page(
    console: &Console,
    status: StatusCode,
    error: Option<&str>,
    username: &str,
) -> Response {
    let csrf = token();
    let page = LoginPage {
        csrf_token: &csrf,
        error,
        username,
    };
    match page.render() {
        Ok(html) => (
            status,
            [(
                header::SET_COOKIE,
                set_cookie(console, LOGIN_CSRF_COOKIE, &csrf, 3600),
            )],
            Html(html),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

pub(super) fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(error = %error, "console page failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

pub async fn login_form(State(console): State<Console>) -> Response {
    login_page(&console, StatusCode::OK, None, "")
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
}

pub async fn login(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&expected, &form.csrf_token) {
        return forbidden("The form has expired: open the login page again.");
    }
    let address = peer.ip().to_string();
    let name = form.username.trim().to_string();
    match db::recent_failures(&console.pool, &name, &address).await {
        Ok((by_name, by_address))
            if by_name >= MAX_FAILURES_PER_MINUTE || by_address >= MAX_FAILURES_PER_MINUTE =>
        {
            return login_page(
                &console,
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many failed logins: wait a minute."),
                &name,
            );
        }
        Ok(_) => {}
        Err(e) => return internal(e),
    }
    let user = match db::credentials(&console.pool, &name).await {
        Ok(user) => user,
        Err(e) => return internal(e),
    };
    // An unknown user costs the same hash as a wrong password: the answer's time says nothing.
    let (user_id, phc) = match user {
        Some((id, phc)) => (Some(id), phc),
        None => (None, DUMMY_HASH.clone()),
    };
    let password = form.password;
    let verified =
        tokio::task::spawn_blocking(move || crate::email::secret::verify_password(&password, &phc))
            .await
            .unwrap_or(false);
    let Some(user_id) = user_id.filter(|_| verified) else {
        if let Err(e) = db::record_failure(&console.pool, &name, &address).await {
            return internal(e);
        }
        tracing::warn!(user = %name, address = %address, "console login failed");
        return login_page(
            &console,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            &name,
        );
    };
    let session = token();
    let hours = console.settings.console.session_hours.max(1);
    if let Err(e) = db::open_session(
        &console.pool,
        &hash(&session),
        user_id,
        &token(),
        &address,
        hours,
    )
    .await
    {
        return internal(e);
    }
    tracing::info!(user = %name, address = %address, "console login");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                set_cookie(&console, SESSION_COOKIE, &session, hours * 3600),
            ),
        ],
    )
        .into_response()
}

/// The hash an unknown user's password is checked against, so that a login's time does not
/// tell a known user from an unknown one.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::email::secret::hash_password(
        &SecretString::from("not a password anyone has"),
        &mut rand::rng(),
    )
    .expect("argon2 hashes")
});

/// Lets a request with a live session through, with its [`Session`] in the extensions; sends
/// every other to the login page.
pub async fn require_session(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let found = match cookie(request.headers(), SESSION_COOKIE) {
        Some(token) => match db::session(&console.pool, &hash(&token)).await {
            Ok(found) => found,
            Err(e) => return internal(e),
        },
        None => None,
    };
    match found {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub(super) struct MessagePage<'a> {
    pub title: &'a str,
    pub text: &'a str,
}

/// A short page with a status.
pub(super) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    match (MessagePage { title, text }).render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => internal(e),
    }
}

/// 403 with a short page.
pub(super) fn forbidden(why: &str) -> Response {
    message(StatusCode::FORBIDDEN, "Forbidden", why)
}

/// The 403 a change gets unless the form carries the session's CSRF token and the user is an
/// operator; `None` when it may go ahead.
fn refusal_of_change(session: &Session, csrf_token: &str) -> Option<Response> {
    if !same(&session.csrf_token, csrf_token) {
        return Some(forbidden(
            "The form's CSRF token is missing or wrong: reload the page.",
        ));
    }
    if session.role != "operator" {
        return Some(forbidden("Viewers cannot change anything."));
    }
    None
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf_token: String,
}

/// A form that carries the session's CSRF token.
pub trait Csrf {
    fn csrf_token(&self) -> &str;
}

impl Csrf for CsrfForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// An operator's change: the session (put there by [`require_session`]) and the form, taken
/// only when the form carries the session's CSRF token and the user is an operator (403
/// otherwise). Every action handler takes one, so none can forget the check.
pub struct Change<T>(pub Session, pub T);

impl<S, T> axum::extract::FromRequest<S> for Change<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Csrf + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let Some(session) = request.extensions().get::<Session>().cloned() else {
            return Err(Redirect::to("/login").into_response());
        };
        let axum::Form(form) = axum::Form::<T>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match refusal_of_change(&session, form.csrf_token()) {
            Some(refused) => Err(refused),
            None => Ok(Change(session, form)),
        }
    }
}

pub async fn logout(
    State(console): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if !same(&session.csrf_token, &form.csrf_token) {
        return forbidden("The form's CSRF token is missing or wrong: reload the page.");
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = db::close_session(&console.pool, &hash(&token)).await
    {
        return internal(e);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (
                header::SET_COOKIE,
                set_cookie(&console, SESSION_COOKIE, "", 0),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_from_every_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; onboard_session=xyz".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab") && !same("", "a"));
        assert_ne!(token(), token());
        assert_eq!(token().len(), 43);
    }
}
