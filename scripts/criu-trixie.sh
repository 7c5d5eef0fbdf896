#!/bin/sh
# The peer of roam-bench-ckpt and roam-bench-migrate: CRIU 4.x, from Debian
# trixie, self-contained under /opt/criu-trixie (the benches look there, or at
# $ROAM_BENCH_CRIU). Debian bookworm's CRIU 3.17 fails `criu check` on this
# kernel's vDSO ([vvar_vclock]); trixie's 4.1 runs.
#
# Build a self-contained CRIU 4.x (from Debian trixie) under /opt/criu-trixie
# on a Debian bookworm host, WITHOUT touching the system's dpkg/apt state.
#
# - apt runs with a fully private configuration (APT_CONFIG points to a
#   generated apt.conf; private sources list, state, cache, empty dpkg status),
#   so the host's /etc/apt/* and /var/lib/{apt,dpkg} are never read or written
#   (apart from the archive keyring /usr/share/keyrings/debian-archive-keyring.gpg).
# - An empty dpkg status file makes apt resolve the FULL dependency closure
#   (including trixie's libc6 / ld-linux-x86-64.so.2).
# - Every .deb is extracted with `dpkg-deb -x` (no maintainer scripts run) into
#   $PREFIX/root.
# - $PREFIX/criu is a wrapper that starts criu through trixie's dynamic loader
#   with --library-path, so host binaries exec'ed by criu (ip, iptables, sh, ...)
#   still use the host's own glibc.
#
# Usage (as root):  sudo scripts/criu-trixie.sh        [PREFIX defaults to /opt/criu-trixie]
# Idempotent: wipes and recreates $PREFIX/root, $PREFIX/debs, $PREFIX/criu and
# the scratch dir $WORK every run (the script itself is kept).
set -eu

PREFIX=${PREFIX:-/opt/criu-trixie}
WORK=${WORK:-/tmp/criu-trixie-apt}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${SEC_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
PKGS=${PKGS:-criu}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -r "$KEYRING" ] || { echo "missing $KEYRING" >&2; exit 1; }

# ---- private apt configuration ---------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/etc/apt.conf.d" "$WORK/etc/preferences.d" "$WORK/etc/sources.list.d" \
         "$WORK/etc/trusted.gpg.d" "$WORK/state/lists/partial" "$WORK/cache/archives/partial" \
         "$WORK/log"
: > "$WORK/state/status"           # empty dpkg status => full dependency closure

cat > "$WORK/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR trixie main
deb [signed-by=$KEYRING] $MIRROR trixie-updates main
deb [signed-by=$KEYRING] $SEC_MIRROR trixie-security main
EOF

cat > "$WORK/apt.conf" <<EOF
Dir "/";
Dir::Etc "$WORK/etc";
Dir::Etc::main "$WORK/apt.conf";
Dir::Etc::Parts "$WORK/etc/apt.conf.d";
Dir::Etc::SourceList "$WORK/etc/sources.list";
Dir::Etc::SourceParts "$WORK/etc/sources.list.d";
Dir::Etc::Preferences "$WORK/etc/preferences";
Dir::Etc::PreferencesParts "$WORK/etc/preferences.d";
Dir::Etc::TrustedParts "$WORK/etc/trusted.gpg.d";
Dir::State "$WORK/state";
Dir::State::status "$WORK/state/status";
Dir::Cache "$WORK/cache";
Dir::Log "$WORK/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Get::AllowUnauthenticated "false";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled "false";
Acquire::IndexTargets::deb::CNF::DefaultEnabled "false";
Binary::apt::APT::Keep-Downloaded-Packages "true";
EOF
export APT_CONFIG="$WORK/apt.conf"

apt-get -q update
# --download-only with an empty status: resolves + downloads the whole closure.
apt-get -q -y --download-only install $PKGS

# ---- extract ----------------------------------------------------------------
rm -rf "$PREFIX/root" "$PREFIX/debs" "$PREFIX/criu"
mkdir -p "$PREFIX/root" "$PREFIX/debs"
cp "$WORK"/cache/archives/*.deb "$PREFIX/debs/"
for deb in "$PREFIX"/debs/*.deb; do
    dpkg-deb -x "$deb" "$PREFIX/root"
done
for deb in "$PREFIX"/debs/*.deb; do
    dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb"
done > "$PREFIX/PACKAGES.txt"

R="$PREFIX/root"
LDSO="$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[ -x "$LDSO" ] || { echo "trixie loader not found at $LDSO" >&2; exit 1; }
[ -x "$R/usr/sbin/criu" ] || { echo "criu binary not found" >&2; exit 1; }

# ---- wrapper -----------------------------------------------------------------
cat > "$PREFIX/criu" <<'EOF'
#!/bin/sh
# Run Debian trixie's criu with trixie's own glibc/loader (host is bookworm).
# --library-path (unlike LD_LIBRARY_PATH) is NOT inherited by programs criu
# executes (ip, iptables-restore, action scripts), so those keep host libs.
D=$(dirname "$(readlink -f "$0")")
R="$D/root"
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
     --library-path "$R/usr/lib/x86_64-linux-gnu" \
     --argv0 criu \
     "$R/usr/sbin/criu" "$@"
EOF
chmod 755 "$PREFIX/criu"

"$PREFIX/criu" --version
echo "OK: wrapper at $PREFIX/criu (packages: $PREFIX/PACKAGES.txt)"
