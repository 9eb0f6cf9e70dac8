# Prosody 0.12 and prosody-modules from Debian bookworm, for compose.yaml.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends prosody prosody-modules \
    && rm -rf /var/lib/apt/lists/*

# Bookworm's mod_privilege leaves each advertised IQ <namespace/> open, so a gateway sees
# only the first one (see examples/prosody.cfg.lua). Fix a copy in the plugin path that
# prosody.cfg.lua lists first; the grep fails the build if the fix did not apply.
RUN install -D /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua \
        /usr/local/lib/prosody/modules/mod_privilege/mod_privilege.lua \
    && sed -i 's/^\( *message:tag("namespace", {ns=namespace, type=perm_type})\)$/\1:up()/' \
        /usr/local/lib/prosody/modules/mod_privilege/mod_privilege.lua \
    && grep -q 'type=perm_type}):up()' \
        /usr/local/lib/prosody/modules/mod_privilege/mod_privilege.lua

USER prosody
EXPOSE 5222 5280 5347
CMD ["prosody", "-F"]
