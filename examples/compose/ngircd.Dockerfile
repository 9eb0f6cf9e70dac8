# ngIRCd from Debian bookworm, for the "irc" profile of compose.yaml.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ngircd \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/ngircd/passerelle.d

USER irc
EXPOSE 6667
CMD ["ngircd", "--nodaemon", "--config", "/etc/ngircd/ngircd.conf"]
