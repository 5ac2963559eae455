# espmail in a container: built on the Rust image, run on Debian slim as a non-root
# user. See the README, "Run in a container".
#
#   docker build -t espmail .
#   mkdir -p secrets && sudo chown 1986:1986 secrets        # the keyfile's own place
#   docker run --rm -v espmail-data:/var/lib/espmail -v "$PWD/secrets:/run/secrets" espmail init
#   docker run -d --name espmail -p 1986:1986 -v espmail-data:/var/lib/espmail \
#     -v "$PWD/secrets/espmail-keyfile:/run/secrets/espmail-keyfile:ro" espmail

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin espmail \
 && install -D -m 0755 -s target/release/espmail /out/espmail

FROM docker.io/library/debian:bookworm-slim
# libssl3: the openssl crate links the system's OpenSSL (SQLite is built in).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1986 espmail \
 && useradd --system --uid 1986 --gid espmail --home-dir /var/lib/espmail \
      --shell /usr/sbin/nologin espmail \
 && install -d -m 0700 -o espmail -g espmail /var/lib/espmail
COPY --from=build /out/espmail /usr/local/bin/espmail
COPY dist/container/espmail.toml /etc/espmail/espmail.toml
# The same variables an operator sets by hand; a flag on the command line beats them.
ENV ESPMAIL_CONFIG=/etc/espmail/espmail.toml \
    ESPMAIL_DATA_DIR=/var/lib/espmail \
    ESPMAIL_LISTEN=0.0.0.0:1986
USER espmail
VOLUME ["/var/lib/espmail"]
EXPOSE 1986
# SIGTERM: stop accepting, let sessions finish saving, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/espmail"]
CMD ["serve"]
