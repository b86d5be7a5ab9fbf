//! Parsing one registered node's data (a ZooKeeper znode's or an etcd key's value) into a
//! backend, shared by the ZooKeeper and etcd adapters.
//!
//! Accepted forms:
//! - JSON with the address under `addr`, `proxy_addr` or `proto_addr` (the first of them
//!   that holds a string is used; an empty one makes the node malformed);
//!   the backend is offline when `state` is present and not `"online"`, or `online` is
//!   `false` (Codis 2.x and 3.x proxies, Jodis), and an offline record is skipped whatever
//!   its address; an optional `weight` (a whole number
//!   0..=4294967295, or a string of one) sets [`Backend::with_weight`], and any other
//!   `weight` makes the node malformed;
//! - plain `host:port` text (surrounding whitespace ignored).
//!
//! An address is `host:port` with a numeric port; an IPv6 host is bracketed (`[::1]:6379`).

use crate::backends::Backend;

/// What a node's data says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeData {
    /// An online backend.
    Online(Backend),
    /// A backend that is registered but not online (skip it, no warning).
    Offline,
}

/// Parses a node's data; `Err` carries why it is malformed (the caller warns and skips it).
pub(crate) fn parse_node(id: &str, data: &[u8]) -> Result<NodeData, String> {
    let text = std::str::from_utf8(data)
        .map_err(|_| format!("node {id}: data is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Err(format!("node {id}: empty data"));
    }
    if text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("node {id}: malformed JSON: {e}"))?;
        // Offline first: a record that says it is offline is skipped whatever else it holds
        // (a proxy going down may clear its address), without a warning.
        let state = v.get("state");
        if state.is_some_and(|s| s.as_str() != Some("online"))
            || v.get("online").and_then(|o| o.as_bool()) == Some(false)
        {
            return Ok(NodeData::Offline);
        }
        let addr = ["addr", "proxy_addr", "proto_addr"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|a| a.as_str()))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("node {id}: JSON has no addr, proxy_addr or proto_addr"))?;
        check_addr(id, addr)?;
        let mut b = Backend::new(addr).with_id(id);
        if let Some(w) = v.get("weight") {
            b = b.with_weight(parse_weight(id, w)?);
        }
        if let Some(state) = state.and_then(|s| s.as_str()) {
            b = b.with_label("state", state);
        }
        return Ok(NodeData::Online(b));
    }
    check_addr(id, text)?;
    Ok(NodeData::Online(Backend::new(text).with_id(id)))
}

/// A weight is a whole number that fits a `u32`, as a JSON number or a string of digits
/// (registries that store every value as text).
fn parse_weight(id: &str, w: &serde_json::Value) -> Result<u32, String> {
    let parsed = match w {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(t) => t.trim().parse::<u32>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        format!(
            "node {id}: weight {w} is not a whole number from 0 to {}",
            u32::MAX
        )
    })
}

/// A usable address is `host:port` with a numeric port and no whitespace; an IPv6 host is
/// bracketed (`[::1]:6379`: unbracketed, `::1:6379` cannot be told from a port, and does not
/// dial).
fn check_addr(id: &str, addr: &str) -> Result<(), String> {
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => {
            let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
            let v6 = host.contains([':', '[', ']']);
            !host.is_empty()
                && (!v6 || bracketed)
                && port.parse::<u16>().is_ok()
                && !addr.contains(char::is_whitespace)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("node {id}: {addr:?} is not host:port"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let on = |a: &str| NodeData::Online(Backend::new(a).with_id("n"));
        assert_eq!(
            parse_node("n", b" 127.0.0.1:6379\n"),
            Ok(on("127.0.0.1:6379"))
        );
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","state":"online"}"#),
            Ok(NodeData::Online(
                Backend::new("h:1")
                    .with_id("n")
                    .with_label("state", "online")
            ))
        );
        assert_eq!(parse_node("n", br#"{"proxy_addr":"h:2"}"#), Ok(on("h:2")));
        assert_eq!(parse_node("n", br#"{"proto_addr":"h:3"}"#), Ok(on("h:3")));
        // The first of addr, proxy_addr, proto_addr that is given wins.
        assert_eq!(
            parse_node(
                "n",
                br#"{"proto_addr":"h:3","proxy_addr":"h:2","addr":"h:1"}"#
            ),
            Ok(on("h:1"))
        );
        assert_eq!(
            parse_node("n", br#"{"proto_addr":"h:3","proxy_addr":"h:2"}"#),
            Ok(on("h:2"))
        );
        // One that is not a string is passed over; an empty string is not an address.
        assert_eq!(
            parse_node("n", br#"{"addr":7,"proxy_addr":"h:2"}"#),
            Ok(on("h:2"))
        );
        assert!(parse_node("n", br#"{"addr":" ","proxy_addr":"h:2"}"#).is_err());
        // An offline record is skipped whatever its address (even none, or a bad one).
        for offline in [
            &br#"{"state":"offline"}"#[..],
            br#"{"addr":"","state":"offline"}"#,
            br#"{"addr":"nonsense","online":false}"#,
        ] {
            assert_eq!(
                parse_node("n", offline),
                Ok(NodeData::Offline),
                "{offline:?}"
            );
        }
        // IPv6 hosts are bracketed.
        assert_eq!(parse_node("n", b"[::1]:6379"), Ok(on("[::1]:6379")));
        for bad in [&b"::1:6379"[..], b"[]:6379", br#"{"addr":"fe80::1:80"}"#] {
            assert!(parse_node("n", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","state":"offline"}"#),
            Ok(NodeData::Offline)
        );
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","online":false}"#),
            Ok(NodeData::Offline)
        );
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","weight":3}"#),
            Ok(NodeData::Online(
                Backend::new("h:1").with_id("n").with_weight(3)
            ))
        );
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","weight":" 0 "}"#),
            Ok(NodeData::Online(
                Backend::new("h:1").with_id("n").with_weight(0)
            ))
        );
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","weight":4294967295}"#),
            Ok(NodeData::Online(
                Backend::new("h:1").with_id("n").with_weight(u32::MAX)
            ))
        );
        assert_eq!(parse_node("n", br#"{"addr":"h:1"}"#), Ok(on("h:1")));
        assert_eq!(Backend::new("h:1").weight(), 1, "no weight given: 1");
        for bad in [
            &br#"{"addr":"h:1","weight":-1}"#[..],
            br#"{"addr":"h:1","weight":1.5}"#,
            br#"{"addr":"h:1","weight":4294967296}"#,
            br#"{"addr":"h:1","weight":"heavy"}"#,
            br#"{"addr":"h:1","weight":null}"#,
            br#"{"addr":"h:1","weight":[1]}"#,
        ] {
            let err = parse_node("n", bad).unwrap_err();
            assert!(err.contains("node n: weight"), "{err}");
        }
        for bad in [
            &b""[..],
            b"{",
            b"{\"state\":\"online\"}",
            b"nonsense",
            b"h:notaport",
            b"\xff",
        ] {
            assert!(parse_node("n", bad).is_err(), "{bad:?}");
        }
    }
}
