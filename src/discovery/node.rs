//! Parsing one registered node's data (a ZooKeeper znode's or an etcd key's value) into a
//! backend, shared by the ZooKeeper and etcd adapters.
//!
//! Accepted forms:
//! - JSON with the address under `addr`, `proxy_addr` or `proto_addr` (first present wins);
//!   the backend is offline when `state` is present and not `"online"`, or `online` is
//!   `false` (Codis 2.x and 3.x proxies, Jodis);
//! - plain `host:port` text (surrounding whitespace ignored).

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
        let addr = ["addr", "proxy_addr", "proto_addr"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|a| a.as_str()))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("node {id}: JSON has no addr, proxy_addr or proto_addr"))?;
        check_addr(id, addr)?;
        if let Some(state) = v.get("state") {
            if state.as_str() != Some("online") {
                return Ok(NodeData::Offline);
            }
        }
        if v.get("online").and_then(|o| o.as_bool()) == Some(false) {
            return Ok(NodeData::Offline);
        }
        let mut b = Backend::new(addr).with_id(id);
        if let Some(state) = v.get("state").and_then(|s| s.as_str()) {
            b = b.with_label("state", state);
        }
        return Ok(NodeData::Online(b));
    }
    check_addr(id, text)?;
    Ok(NodeData::Online(Backend::new(text).with_id(id)))
}

/// A usable address is `host:port` with a numeric port and no whitespace.
fn check_addr(id: &str, addr: &str) -> Result<(), String> {
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().is_ok() && !addr.contains(char::is_whitespace)
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
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","state":"offline"}"#),
            Ok(NodeData::Offline)
        );
        assert_eq!(
            parse_node("n", br#"{"addr":"h:1","online":false}"#),
            Ok(NodeData::Offline)
        );
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
