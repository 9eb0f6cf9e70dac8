-- Passerelle on an existing Prosody 0.12 (Debian bookworm: packages prosody and
-- prosody-modules).
--
-- Save as /etc/prosody/conf.d/passerelle.cfg.lua (Debian's prosody.cfg.lua ends with
-- Include "conf.d/*.cfg.lua"; an included file starts in the global section), replace
-- example.org with your domain and each secret with a random one
-- (openssl rand -base64 24), then check and restart:
--   prosodyctl check config && systemctl restart prosody
-- Each secret must equal `secret` in the matching [networks.NAME] of gateway.toml.
--
-- mod_privilege (XEP-0356) comes from prosody-modules. It lets each gateway put its
-- contacts in the users' rosters, show what a user wrote from another client of the
-- legacy network as sent by them, add its group chats to their bookmarks, follow their
-- read markers, and request upload slots in their name.
--
-- Bookworm's mod_privilege has a bug: when it tells a component which IQ namespaces it
-- may use, it opens a <namespace/> element per namespace and never closes it, so the
-- elements nest inside each other and the gateway sees only the first namespace. The
-- fix is to add `:up()` right after the `message:tag("namespace", ...)` call in
-- advertise_perm(), so that each <namespace/> is closed before the next one starts
-- (Passerelle's test servers apply the same fix, see patch_mod_privilege in
-- gateway/localservers/prosody.py). Fix a copy, so a package upgrade does not undo it;
-- Debian's prosody.cfg.lua already lists /usr/local/lib/prosody/modules in plugin_paths,
-- which Prosody searches before its own modules:
--   install -D /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua \
--       /usr/local/lib/prosody/modules/mod_privilege/mod_privilege.lua
--   sed -i 's/^\( *message:tag("namespace", {ns=namespace, type=perm_type})\)$/\1:up()/' \
--       /usr/local/lib/prosody/modules/mod_privilege/mod_privilege.lua
-- Without the fix, grant a single IQ namespace (pubsub, for bookmarks): uploads then
-- use slots the component requests for itself, and read markers are not followed.

-- The component listener (XEP-0114) is not encrypted: listen on loopback only, with
-- Passerelle on the same machine. These two options belong to the global section.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Your existing VirtualHost. If its section already has a modules_enabled list, add
-- "privilege" to that list instead: a second modules_enabled replaces the first.
VirtualHost "example.org"
  modules_enabled = { "privilege" }
  -- One entry per gateway component; grant every component the same rights.
  privileged_entities = {
    ["echo.example.org"] = {
      roster = "both";       -- read and edit the users' rosters
      message = "outgoing";  -- send messages as the users (what they wrote elsewhere)
      iq = {
        -- bookmarks and read markers in the users' PEP
        ["http://jabber.org/protocol/pubsub"] = "both";
        -- subscribe the gateway to the users' read markers (XEP-0490)
        ["http://jabber.org/protocol/pubsub#owner"] = "set";
        -- upload slots in the users' name
        ["urn:xmpp:http:upload:0"] = "get";
      };
    };
    -- Copy the entry above for each network you enable:
    -- ["irc.example.org"] = { ... };
    -- ["matrix.example.org"] = { ... };
    -- ["email.example.org"] = { ... };
  }

-- One external component per network, named as its `jid` in gateway.toml. The
-- component needs mod_privilege too: it is what tells it its rights.
Component "echo.example.org"
  component_secret = "change-me-echo"
  modules_enabled = { "privilege" }

-- Component "irc.example.org"
--   component_secret = "change-me-irc"
--   modules_enabled = { "privilege" }

-- Group chats on the XMPP side. Skip these two if your server already has a MUC
-- service and an upload service.
Component "conference.example.org" "muc"
  modules_enabled = { "muc_mam" }  -- room history for clients that join late

-- HTTP file upload (XEP-0363). Files are served by Prosody's HTTP server
-- (https on port 5281 by default; needs a certificate for upload.example.org).
Component "upload.example.org" "http_file_share"
  http_file_share_size_limit = 16 * 1024 * 1024  -- bytes per file
