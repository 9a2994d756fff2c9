//! The wall clock in Unix seconds: the one definition behind token lifetimes reported by
//! credentials, client assertion times, and the checks of a token's `exp`, `nbf` and `iat`.
//! (The emulator keeps its own: it imports nothing from the proxy's modules.)

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`unix_now`] as a JWT NumericDate, which is signed (`exp`, `nbf`, `iat`).
pub fn unix_now_signed() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}
