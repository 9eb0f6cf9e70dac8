-- Prosody for compose.yaml: a throw-away XMPP server for the domain "localhost", to try
-- Passerelle on one machine. Not a production configuration (no TLS); for a real server
-- start from examples/prosody.cfg.lua.
--
-- Create an account:
--   docker compose exec prosody prosodyctl register alice localhost PASSWORD
-- then log in as alice@localhost to 127.0.0.1:5222 with TLS turned off in the client.

-- prosody.Dockerfile puts a fixed mod_privilege here (see examples/prosody.cfg.lua
-- for the bug); Prosody searches these paths before its own modules.
plugin_paths = { "/usr/local/lib/prosody/modules" }

-- Foreground in a container: log to the console, which `docker compose logs` shows.
log = { { levels = { min = "info" }, to = "console" } }

-- No certificates here, so no TLS and no federation. This is acceptable only because
-- compose.yaml publishes the client port on the host's 127.0.0.1 and nowhere else.
modules_disabled = { "s2s", "tls" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
allow_registration = false

modules_enabled = {
  "roster", "saslauth", "disco", "carbons", "mam", "ping", "presence", "vcard4",
  "vcard_legacy", "pep", "private", "bookmarks", "blocklist", "smacks", "csi_simple",
  "time", "version", "uptime",
}

-- With Nagle's algorithm a stanza right behind another can wait up to 40 ms.
network_settings = { nagle = false }

c2s_ports = { 5222 }
http_ports = { 5280 }
https_ports = {}
c2s_direct_tls_ports = {}
-- Inside the container, listen on every interface: Docker forwards the published
-- ports, and Passerelle connects from its own container.
interfaces = { "*" }
http_interfaces = { "*" }

-- The component port (XEP-0114) is unencrypted and grants whoever knows a secret the
-- right to act as a gateway. Listening on "*" is acceptable here only because this
-- port is reachable from the private compose network alone: compose.yaml does not
-- publish it. On a real server keep it on loopback (see examples/prosody.cfg.lua).
component_ports = { 5347 }
component_interfaces = { "*" }

VirtualHost "localhost"
  modules_enabled = { "privilege" }
  privileged_entities = {
    ["echo.localhost"] = {
      roster = "both";
      message = "outgoing";
      iq = {
        ["http://jabber.org/protocol/pubsub"] = "both";
        ["http://jabber.org/protocol/pubsub#owner"] = "set";
        ["urn:xmpp:http:upload:0"] = "get";
      };
    };
    ["irc.localhost"] = {
      roster = "both";
      message = "outgoing";
      iq = {
        ["http://jabber.org/protocol/pubsub"] = "both";
        ["http://jabber.org/protocol/pubsub#owner"] = "set";
        ["urn:xmpp:http:upload:0"] = "get";
      };
    };
  }

-- Secrets must equal `secret` in examples/compose/gateway.toml. Change both.
Component "echo.localhost"
  component_secret = "change-me-echo"
  modules_enabled = { "privilege" }

Component "irc.localhost"
  component_secret = "change-me-irc"
  modules_enabled = { "privilege" }

Component "conference.localhost" "muc"
  modules_enabled = { "muc_mam" }

-- Download links point at the host's 127.0.0.1:5280, so clients on the host can fetch
-- files; the passerelle container cannot reach that address, so gateways can't upload
-- here (the echo network carries text only).
Component "upload.localhost" "http_file_share"
  http_external_url = "http://localhost:5280/"
