#!/usr/bin/env bash
# Install the edgeserve agent as a hardened systemd service on a device.
#
# Targets: Raspberry Pi OS Bookworm (arm64) on a Pi 4 / Pi 5, NVIDIA Jetson with JetPack 6
# (Ubuntu 22.04, aarch64), and generic x86_64 Debian/Ubuntu. Run as root on the device:
#
#   sudo devices/install-agent.sh                         # profile detected from the hardware
#   sudo devices/install-agent.sh --profile rpi5 --fleet-config pi-kitchen-01.toml
#   sudo devices/install-agent.sh --uninstall [--purge]
#
# What it does (each step printed; --dry-run prints them and changes nothing):
#   1. picks the device profile (devices/<name>.toml) and the TFLite runtime for this platform:
#      tflite-runtime only where it works (aarch64, Python <= 3.11, glibc >= 2.34, with numpy<2),
#      else ai-edge-litert (LiteRT: Python 3.10-3.13, numpy 2) through the `tflite` extra;
#   2. creates the system user `edgeserve` (no login, no home);
#   3. creates a virtualenv in /opt/edgeserve/venv with edgeserve-toolkit[agent] (the
#      distribution's name on PyPI; the command is `edgeserve`) and that runtime; on a
#      Jetson it uses the onnxruntime-gpu build (CUDA/TensorRT providers) when it is installed
#      system-wide or given with --ort-wheel, and says clearly when it is not;
#   4. creates the state directory /var/lib/edgeserve (0750, owned by the service user) and
#      /etc/edgeserve/agent.toml from the profile (an existing one is kept; the new one is
#      written beside it as agent.toml.new);
#   5. installs /etc/systemd/system/edgeserve-agent.service (Restart=always, NoNewPrivileges,
#      ProtectSystem=strict, ReadWritePaths=<state dir>, ...) and enables + starts it.
#
# --root DIR installs into DIR as if it were / (for images and tests): no user is created,
# nothing is chowned, systemctl is not called. --no-systemd installs into / for a system where
# systemd is not running (a chroot, a container, an image being built): the user, ownership,
# config and unit file as on a device, but no systemctl; start the unit's ExecStart yourself
# or boot the system. scripts/test-devices installs this way into arm64 chroots.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="install-agent.sh"

ROOT="/"
PREFIX="/opt/edgeserve"
STATE="/var/lib/edgeserve"
ETC="/etc/edgeserve"
UNIT_DIR="/etc/systemd/system"
UNIT_NAME="edgeserve-agent.service"
SERVICE_USER="edgeserve"
PROFILE="auto"
PROFILES_DIR="$SCRIPT_DIR"
PYTHON="python3"
DIST="edgeserve-toolkit"   # the distribution's name on PyPI (`edgeserve` there is another project)
PACKAGE=""            # default: the checkout this script is in, else $DIST from the index
PIP_ARGS=""
TFLITE="auto"          # auto | litert | tflite-runtime | none
ORT_WHEEL=""
FLEET_CONFIG=""
TRUST_ANCHOR=""
HOST="127.0.0.1"
PORT="8000"
DRY_RUN=0
UNINSTALL=0
PURGE=0
START=1
CHECK=1
SYSTEMD=1              # 0: systemd is not running here (--no-systemd): never call systemctl

usage() {
  cat <<EOF
usage: $PROG [options]
  --profile NAME|auto    device profile from devices/ (rpi4, rpi5, jetson-orin-nano, x86_64);
                         auto reads /proc/device-tree/model and the architecture (default)
  --profiles-dir DIR     where the profiles are (default: this script's directory)
  --state DIR            agent state directory (default $STATE)
  --prefix DIR           install prefix; the venv goes to PREFIX/venv (default $PREFIX)
  --user NAME            service user (default $SERVICE_USER)
  --python PY            interpreter for the venv, >= 3.10 (default python3)
  --package SPEC         what to install: $DIST (optionally with a version spec, e.g.
                         '$DIST>=0.2'), a wheel, an sdist or a source dir (default: the
                         source checkout this script is in, else '$DIST'
                         from the package index; extras are added by this script)
  --pip-args "ARGS"      extra arguments for every pip install (e.g. --index-url ...)
  --tflite KIND          auto | litert | tflite-runtime | none (default auto)
  --ort-wheel FILE|URL   onnxruntime-gpu wheel for a Jetson (JetPack 6), from the Jetson Zoo
  --fleet-config FILE    the [fleet] section for this device, as printed by
                         'edgeserve fleet device add' (from its [fleet] line on is used)
  --trust-anchor FILE    the fleet's root keys (keys/root.json from 'edgeserve keys init'),
                         installed as /etc/edgeserve/root.json (what [fleet] trust_anchor names)
  --host ADDR --port N   where the agent listens (default $HOST:$PORT)
  --root DIR             install under DIR as if it were / (no user, chown or systemctl)
  --no-systemd           install into / without calling systemctl (chroots, containers)
  --dry-run              print what would be done, change nothing
  --no-start             install but do not enable/start the service
  --no-check             skip the post-install check (edgeserve --version, providers)
  --uninstall            stop and remove the service and the venv (state and config kept)
  --purge                with --uninstall: also remove state, config and the service user
  -h, --help             this help
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }
warn() { echo "$PROG: WARNING: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="${2:?}"; shift 2 ;;
    --profiles-dir) PROFILES_DIR="${2:?}"; shift 2 ;;
    --state) STATE="${2:?}"; shift 2 ;;
    --prefix) PREFIX="${2:?}"; shift 2 ;;
    --user) SERVICE_USER="${2:?}"; shift 2 ;;
    --python) PYTHON="${2:?}"; shift 2 ;;
    --package) PACKAGE="${2:?}"; shift 2 ;;
    --pip-args) PIP_ARGS="${2?}"; shift 2 ;;
    --tflite) TFLITE="${2:?}"; shift 2 ;;
    --ort-wheel) ORT_WHEEL="${2:?}"; shift 2 ;;
    --fleet-config) FLEET_CONFIG="${2:?}"; shift 2 ;;
    --trust-anchor) TRUST_ANCHOR="${2:?}"; shift 2 ;;
    --host) HOST="${2:?}"; shift 2 ;;
    --port) PORT="${2:?}"; shift 2 ;;
    --root) ROOT="${2:?}"; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-start) START=0; shift ;;
    --no-check) CHECK=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$TFLITE" in auto|litert|tflite-runtime|none) ;; *) die "--tflite must be auto, litert, tflite-runtime or none" ;; esac
case "$PORT" in ''|*[!0-9]*) die "--port must be a number" ;; esac
for p in "$PREFIX" "$STATE"; do
  case "$p" in /*) ;; *) die "$p: must be an absolute path" ;; esac
done
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"

ROOT="${ROOT%/}"
SYSTEM=1                        # touch users, ownership and systemd only when installing into /
[ -z "$ROOT" ] || SYSTEM=0
# paths as the device sees them (written into files) and as we write them (under --root)
VENV="$PREFIX/venv"
CONFIG="$ETC/agent.toml"
R_PREFIX="$ROOT$PREFIX"; R_VENV="$ROOT$VENV"; R_STATE="$ROOT$STATE"; R_ETC="$ROOT$ETC"
R_CONFIG="$ROOT$CONFIG"; R_UNIT="$ROOT$UNIT_DIR/$UNIT_NAME"

# run CMD...: execute, or print under --dry-run
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
# write_file DEST MODE: stdin to DEST atomically (temp file + mv), or show it under --dry-run
write_file() {
  local dest="$1" mode="$2" tmp
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ write $dest (mode $mode):"; sed 's/^/|   /'; return
  fi
  mkdir -p "$(dirname "$dest")"
  tmp="$(mktemp "$dest.XXXXXX")"
  cat >"$tmp"; chmod "$mode" "$tmp"; mv -f "$tmp" "$dest"
}
system() {  # system CMD...: only when installing into the real /
  if [ "$SYSTEM" = 1 ]; then run "$@"; else echo "  (skipped under --root: $*)"; fi
}
systemd() {  # systemd CMD...: only into the real / where systemd runs (not --no-systemd)
  if [ "$SYSTEMD" = 1 ]; then system "$@"; else echo "  (skipped, --no-systemd: $*)"; fi
}

if [ "$SYSTEM" = 1 ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0 ...), or use --dry-run / --root DIR"
fi

# ---------------------------------------------------------------- uninstall
if [ "$UNINSTALL" = 1 ]; then
  say "stopping and removing $UNIT_NAME"
  if [ "$SYSTEM" = 1 ] && [ "$SYSTEMD" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    run systemctl disable --now "$UNIT_NAME" || true
  fi
  run rm -f "$R_UNIT"
  systemd systemctl daemon-reload
  say "removing $VENV"
  run rm -rf "$R_VENV"
  [ -d "$R_PREFIX" ] && run rmdir --ignore-fail-on-non-empty "$R_PREFIX"
  if [ "$PURGE" = 1 ]; then
    say "purging state $STATE and config $ETC"
    run rm -rf "$R_STATE" "$R_ETC"
    if [ "$SYSTEM" = 1 ] && id "$SERVICE_USER" >/dev/null 2>&1; then
      run userdel "$SERVICE_USER"
    fi
  else
    say "kept $STATE (models, telemetry) and $CONFIG; --purge removes them"
  fi
  say "uninstalled"
  exit 0
fi

# ---------------------------------------------------------------- platform
ARCH="$(uname -m)"
MODEL=""
for f in "$ROOT/proc/device-tree/model" /proc/device-tree/model; do
  if [ -r "$f" ]; then MODEL="$(tr -d '\0' <"$f")"; break; fi
done
OS_ID=""; OS_VERSION=""
for f in "$ROOT/etc/os-release" /etc/os-release; do
  if [ -r "$f" ]; then
    # shellcheck source=/dev/null
    OS_ID="$(. "$f"; echo "${ID:-}")"
    # shellcheck source=/dev/null
    OS_VERSION="$(. "$f"; echo "${VERSION_CODENAME:-${VERSION_ID:-}}")"
    break
  fi
done
IS_JETSON=0
if [ -e "$ROOT/etc/nv_tegra_release" ] || [[ "$MODEL" == *Jetson* ]] || [[ "$MODEL" == *NVIDIA* ]]; then
  IS_JETSON=1
fi

if [ "$PROFILE" = auto ]; then
  case "$MODEL" in
    *"Raspberry Pi 5"*) PROFILE=rpi5 ;;
    *"Raspberry Pi 4"*) PROFILE=rpi4 ;;
    *) if [ "$IS_JETSON" = 1 ]; then PROFILE=jetson-orin-nano
       elif [ "$ARCH" = x86_64 ]; then PROFILE=x86_64
       else die "cannot tell which device this is (model '${MODEL:-unknown}', $ARCH): pass --profile NAME"
       fi ;;
  esac
fi
PROFILE_FILE="$PROFILES_DIR/$PROFILE.toml"
if [ ! -r "$PROFILE_FILE" ]; then
  known=""
  for f in "$PROFILES_DIR"/*.toml; do [ -e "$f" ] && known="$known $(basename "$f" .toml)"; done
  die "no device profile $PROFILE_FILE (known:${known:- none})"
fi

# toml_get SECTION KEY: the raw value of KEY in [SECTION] ("" = top level) of the profile.
# Profiles are flat key = value files (devices/*.toml); this is all the TOML we need here.
toml_get() {
  awk -v want="$1" -v key="$2" '
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*\[/ { gsub(/[][[:space:]]/, ""); section = $0; next }
    section == want {
      line = $0; sub(/#[^"]*$/, "", line)
      split(line, kv, "=")
      k = kv[1]; gsub(/[[:space:]]/, "", k)
      if (k == key) { sub(/^[^=]*=[[:space:]]*/, "", line); sub(/[[:space:]]+$/, "", line); print line; exit }
    }' "$PROFILE_FILE"
}
unquote() { sed 's/^"//; s/"$//'; }

P_ARCH="$(toml_get "" arch | unquote)"
P_ORT_PACKAGE="$(toml_get onnxruntime package | unquote)"
P_PROVIDERS="$(toml_get onnxruntime providers)"          # a TOML array, kept verbatim
P_TFLITE_PACKAGE="$(toml_get tflite package | unquote)"
[ -n "$P_PROVIDERS" ] || P_PROVIDERS='["CPUExecutionProvider"]'

say "device: ${MODEL:-unknown model} ($ARCH, ${OS_ID:-unknown OS} ${OS_VERSION}); profile $PROFILE"
if [ -n "$P_ARCH" ] && [ "$P_ARCH" != "$ARCH" ]; then
  warn "profile $PROFILE is for $P_ARCH but this machine is $ARCH"
fi
case "$OS_ID:$OS_VERSION" in
  debian:bookworm|raspbian:bookworm|debian:trixie|ubuntu:jammy|ubuntu:22.04|ubuntu:noble|ubuntu:24.04) ;;
  *) warn "tested on Raspberry Pi OS Bookworm, Debian bookworm and trixie (arm64) and JetPack 6 (Ubuntu 22.04); this is ${OS_ID:-?} ${OS_VERSION:-?}" ;;
esac

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt install python3 python3-venv)"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
PY_MINOR="${PY_VERSION#*.}"
if [ "${PY_VERSION%%.*}" != 3 ] || [ "$PY_MINOR" -lt 10 ]; then
  die "Python >= 3.10 needed, $PYTHON is $PY_VERSION"
fi
# Debian and Ubuntu split venv support into the python3-venv package
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON cannot create virtualenvs: apt install python3-venv"
GLIBC="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
GLIBC_MINOR="${GLIBC#2.}"; case "$GLIBC_MINOR" in ''|*[!0-9]*) GLIBC_MINOR=0 ;; esac

# ---------------------------------------------------------------- TFLite runtime choice
# tflite-runtime's last aarch64 wheels (2.14) exist for CPython <= 3.11, are tagged
# manylinux_2_34 (glibc >= 2.34) and were built against numpy 1.x (numpy 2 breaks them).
# ai-edge-litert (LiteRT) is its successor: CPython 3.10-3.13, glibc >= 2.27, numpy 2.
tflite_runtime_ok() {
  [ "$ARCH" = aarch64 ] && [ "$PY_MINOR" -le 11 ] && [ "$GLIBC_MINOR" -ge 34 ]
}
EXTRAS="agent"
EXTRA_REQS=()
case "$TFLITE" in
  auto)
    if [ "$P_TFLITE_PACKAGE" = tflite-runtime ] && tflite_runtime_ok; then
      TFLITE_CHOICE=tflite-runtime
    else
      [ "$P_TFLITE_PACKAGE" = tflite-runtime ] && \
        say "profile $PROFILE prefers tflite-runtime, which needs aarch64, Python <= 3.11 and glibc >= 2.34 (have $ARCH, $PY_VERSION, glibc ${GLIBC:-?}): using ai-edge-litert"
      TFLITE_CHOICE=litert
    fi ;;
  tflite-runtime)
    tflite_runtime_ok || die "tflite-runtime needs aarch64, Python <= 3.11 and glibc >= 2.34 (have $ARCH, $PY_VERSION, glibc ${GLIBC:-?}); use --tflite litert"
    TFLITE_CHOICE=tflite-runtime ;;
  *) TFLITE_CHOICE="$TFLITE" ;;
esac
case "$TFLITE_CHOICE" in
  litert) EXTRAS="agent,tflite" ;;
  tflite-runtime) EXTRA_REQS+=("tflite-runtime>=2.14" "numpy<2") ;;
esac
say "TFLite runtime: $TFLITE_CHOICE"

# ---------------------------------------------------------------- ONNX Runtime build
# On a Jetson the CUDA/TensorRT providers come only with NVIDIA's onnxruntime-gpu build
# (Jetson Zoo wheel, or installed system-wide); PyPI's aarch64 onnxruntime is CPU-only.
ORT_MODE="pypi"        # pypi | wheel | system
SYSTEM_SITE=()
if [ "$P_ORT_PACKAGE" = onnxruntime-gpu ] || [ "$IS_JETSON" = 1 ]; then
  if [ -n "$ORT_WHEEL" ]; then
    ORT_MODE="wheel"
    say "ONNX Runtime: onnxruntime-gpu from $ORT_WHEEL"
  elif "$PYTHON" -c 'import sys, onnxruntime as o; p = o.get_available_providers(); sys.exit(0 if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(p) else 1)' 2>/dev/null; then
    ORT_MODE="system"
    SYSTEM_SITE=(--system-site-packages)
    say "ONNX Runtime: the system's GPU build (CUDA/TensorRT providers), shared into the venv"
  else
    warn "onnxruntime-gpu is NOT installed: this Jetson will run ONNX models on the CPU only."
    warn "  Install NVIDIA's JetPack 6 wheel (https://elinux.org/Jetson_Zoo#ONNX_Runtime) and re-run"
    warn "  with --ort-wheel onnxruntime_gpu-<version>-cp310-cp310-linux_aarch64.whl"
  fi
fi

# the requirement for the package with our extras: a name/spec, a wheel file or a source dir
if [ -z "$PACKAGE" ]; then
  if grep -qs "^name = \"$DIST\"" "$SCRIPT_DIR/../pyproject.toml"; then
    PACKAGE="$(cd "$SCRIPT_DIR/.." && pwd)"
  else
    PACKAGE="$DIST"
  fi
fi
if [[ "$PACKAGE" == */* || "$PACKAGE" == *.whl || "$PACKAGE" == *.tar.gz ]]; then
  [ -e "$PACKAGE" ] || die "--package $PACKAGE: no such file or directory"
  PKG_REQ="${DIST}[$EXTRAS] @ file://$(cd "$(dirname "$PACKAGE")" && pwd)/$(basename "$PACKAGE")"
elif [[ "$PACKAGE" == "$DIST" || "$PACKAGE" == "$DIST"[\<\>=!~\ ]* ]]; then
  PKG_REQ="${DIST}[$EXTRAS]${PACKAGE#"$DIST"}"      # a version spec: edgeserve-toolkit>=0.2
else
  die "--package $PACKAGE: expected $DIST (with an optional version spec), a wheel, an sdist or a source directory"
fi
read -r -a PIP_EXTRA <<<"$PIP_ARGS"

# ---------------------------------------------------------------- user
say "service user $SERVICE_USER"
if [ "$SYSTEM" = 1 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
  run useradd --system --user-group --no-create-home --home-dir "$STATE" \
    --shell /usr/sbin/nologin --comment "edgeserve agent" "$SERVICE_USER"
else
  echo "  (exists or --root: not created)"
fi
GROUPS_LINE=""
PRIVATE_DEVICES=yes
if [ "$IS_JETSON" = 1 ] || [ "$P_ORT_PACKAGE" = onnxruntime-gpu ]; then
  # CUDA needs /dev/nvhost-*, /dev/nvmap, which JetPack gives to the video and render groups
  GROUPS_LINE="video render"
  PRIVATE_DEVICES=no
  for g in video render; do
    if [ "$SYSTEM" = 1 ] && getent group "$g" >/dev/null 2>&1; then run usermod -aG "$g" "$SERVICE_USER"; fi
  done
fi

# ---------------------------------------------------------------- venv
say "virtualenv $VENV ($PYTHON $PY_VERSION) with $PKG_REQ ${EXTRA_REQS[*]:-}"
run mkdir -p "$R_PREFIX"
# every install leaves bytecode to the compileall below
PIP_INSTALL=(install -q --no-compile --disable-pip-version-check "${PIP_EXTRA[@]}")
INSTALL=("$R_VENV/bin/python" -m pip "${PIP_INSTALL[@]}")
PIP_FRESH=0
if [ ! -x "$R_VENV/bin/python" ] || [ "$DRY_RUN" = 1 ]; then
  # The interpreter's bundled pip wheel (Debian: /usr/share/python-wheels) puts the newest pip
  # into a venv made without one, run from the wheel itself (which pip supports): ensurepip
  # would first install the bundled pip (and setuptools on 3.11) only for the upgrade to
  # replace it. That is a minute of a Pi 4's CPU (arm64 under qemu: 68 s against 37 on
  # bookworm, 53 against 33 on trixie). The bundled wheel stays a candidate, so an offline
  # --pip-args "--no-index" still gets a pip.
  BUNDLED_PIP="$("$PYTHON" -c 'import ensurepip, glob, os, sysconfig
dirs = [os.path.join(os.path.dirname(ensurepip.__file__), "_bundled"),
        sysconfig.get_config_var("WHEEL_PKG_DIR") or "", "/usr/share/python-wheels"]
print(next((w for d in dirs if d for w in sorted(glob.glob(os.path.join(d, "pip-*.whl")))), ""))')"
  if [ -n "$BUNDLED_PIP" ]; then
    run "$PYTHON" -m venv --without-pip "${SYSTEM_SITE[@]}" "$R_VENV"
    # --ignore-installed: with --system-site-packages, a system pip must not stand in for it
    run "$R_VENV/bin/python" "$BUNDLED_PIP/pip" "${PIP_INSTALL[@]}" \
      --upgrade --ignore-installed --find-links "$(dirname "$BUNDLED_PIP")" pip
    PIP_FRESH=1
  else
    run "$PYTHON" -m venv "${SYSTEM_SITE[@]}" "$R_VENV"
  fi
fi
[ "$PIP_FRESH" = 1 ] || run "${INSTALL[@]}" --upgrade pip
if [ "$ORT_MODE" = pypi ]; then
  run "${INSTALL[@]}" --upgrade "$PKG_REQ" "${EXTRA_REQS[@]}"
else
  # keep PyPI's CPU onnxruntime out: it would shadow the GPU build's `onnxruntime` module
  [ "$ORT_MODE" = wheel ] && run "${INSTALL[@]}" "$ORT_WHEEL"
  run "${INSTALL[@]}" --upgrade --no-deps "$PKG_REQ"
  # the extras' requirements from the installed metadata, without onnxruntime (pip vendors
  # packaging, so this needs nothing else in the venv)
  DEPS_PY='import importlib.metadata as m, sys
from pip._vendor.packaging.requirements import Requirement
extras = sys.argv[1].split(",")
for line in m.requires(sys.argv[2]) or []:
    r = Requirement(line)
    if r.name.lower() in ("onnxruntime", "onnxruntime-gpu"):
        continue
    if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras):
        r.marker = None
        print(r)'
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ install ${DIST}[$EXTRAS]'s requirements except onnxruntime"
  else
    mapfile -t DEPS < <("$R_VENV/bin/python" -c "$DEPS_PY" "$EXTRAS" "$DIST")
    run "${INSTALL[@]}" "${DEPS[@]}" "${EXTRA_REQS[@]}"
  fi
fi

# Bytecode for what pip installed (it ran with --no-compile): pip compiles one file at a time,
# compileall on every core. Under qemu compiling was 60 % of the install's CPU, so it skips
# what the agent, which runs as a user that cannot write bytecode into this root-owned venv,
# never imports: packages' own test suites (numpy's alone are a sixth of the source); pip, the
# installer's tool, which writes its own bytecode when root next runs it; ONNX Runtime's
# model-preparation tools (transformers, quantization, tools: they need onnx, not installed
# here); and pygments' lexers (rich highlights no source in the agent): 13 of 27 MB
# of source. What is not compiled, or fails to, is compiled when imported, as pip leaves it.
NO_BYTECODE='site-packages/((.*/)?tests?|pip|pygments/lexers|onnxruntime/(transformers|quantization|tools))/'
run "$R_VENV/bin/python" -m compileall -qq -j0 -x "$NO_BYTECODE" "$R_VENV/lib" \
  || warn "some modules in $VENV were not byte-compiled; Python compiles them when they are imported"

# ---------------------------------------------------------------- state + config
say "state directory $STATE, config $CONFIG"
run mkdir -p "$R_STATE" "$R_ETC"
run chmod 0750 "$R_STATE"
system chown -R "$SERVICE_USER:$SERVICE_USER" "$R_STATE"

PROVIDERS="$P_PROVIDERS"
if [ "$CHECK" = 1 ] && [ "$DRY_RUN" = 0 ]; then
  AVAILABLE="$("$R_VENV/bin/python" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))')"
  say "ONNX Runtime providers available: $AVAILABLE"
  if [ "$P_ORT_PACKAGE" = onnxruntime-gpu ] && [[ "$AVAILABLE" != *CUDAExecutionProvider* ]]; then
    warn "no CUDA/TensorRT provider in this venv: models will run on the CPU (see above)"
  fi
fi
if [ "$ORT_MODE" = pypi ] && [ "$P_ORT_PACKAGE" = onnxruntime-gpu ]; then
  PROVIDERS='["CPUExecutionProvider"]'   # what PyPI's build has; the GPU build adds the rest
fi

FLEET_SECTION="# [fleet]: add the section printed by 'edgeserve fleet device add <id>' to follow a fleet"
if [ -n "$FLEET_CONFIG" ]; then
  [ -r "$FLEET_CONFIG" ] || die "--fleet-config $FLEET_CONFIG: not readable"
  grep -q '^\[fleet\]' "$FLEET_CONFIG" || die "--fleet-config $FLEET_CONFIG: no [fleet] section"
  # everything from the [fleet] line on (`device add` prints a few lines before it)
  FLEET_SECTION="$(sed -n '/^\[fleet\]/,$p' "$FLEET_CONFIG")"
  if [ -n "$TRUST_ANCHOR" ]; then
    FLEET_SECTION="$(printf '%s\n' "$FLEET_SECTION" | sed '/^trust_anchor[[:space:]]*=/d')
trust_anchor = \"$ETC/root.json\""
  fi
  grep -q '^trust_anchor' <<<"$FLEET_SECTION" || warn "the [fleet] section has no trust_anchor: the agent will refuse to start (--trust-anchor keys/root.json)"
fi
if [ -n "$TRUST_ANCHOR" ]; then
  [ -r "$TRUST_ANCHOR" ] || die "--trust-anchor $TRUST_ANCHOR: not readable"
  say "trust anchor $ETC/root.json (pinned root keys)"
  write_file "$ROOT$ETC/root.json" 0644 <"$TRUST_ANCHOR"
fi
AGENT_TOML="# edgeserve agent configuration, written by install-agent.sh for profile $PROFILE.
# Every key with its default and unit: README, section \"agent.toml\".
state_dir = \"$STATE\"

[server]
host = \"$HOST\"        # loopback only; any other address needs token = \"...\"
port = $PORT

[runtime]
# ONNX Runtime execution providers, tried in order (profile $PROFILE, ONNX Runtime: $ORT_MODE build)
providers = $PROVIDERS
threads = 0               # 0 = the runtime's default (one per core)

$FLEET_SECTION
"
CONFIG_DEST="$R_CONFIG"
if [ -e "$R_CONFIG" ] && [ "$DRY_RUN" = 0 ]; then
  CONFIG_DEST="$R_CONFIG.new"
  say "$CONFIG exists and is kept; the profile's version is in $CONFIG.new"
fi
printf '%s' "$AGENT_TOML" | write_file "$CONFIG_DEST" 0640
system chown "root:$SERVICE_USER" "$CONFIG_DEST"

# ---------------------------------------------------------------- systemd unit
say "systemd unit $UNIT_DIR/$UNIT_NAME"
[ -r "$SCRIPT_DIR/$UNIT_NAME" ] || die "unit template $SCRIPT_DIR/$UNIT_NAME is missing"
sed -e "s|@USER@|$SERVICE_USER|g" -e "s|@VENV@|$VENV|g" -e "s|@CONFIG@|$CONFIG|g" \
    -e "s|@STATE@|$STATE|g" -e "s|@GROUPS@|$GROUPS_LINE|g" \
    -e "s|@PRIVATE_DEVICES@|$PRIVATE_DEVICES|g" "$SCRIPT_DIR/$UNIT_NAME" | write_file "$R_UNIT" 0644

if [ "$CHECK" = 1 ] && [ "$DRY_RUN" = 0 ]; then
  say "check: $("$R_VENV/bin/edgeserve" --version)"
  "$R_VENV/bin/python" -c "import importlib.util as u, sys; ok = any(u.find_spec(m) for m in ('tflite_runtime', 'ai_edge_litert')); sys.exit(0 if ok or sys.argv[1] == 'none' else 1)" "$TFLITE_CHOICE" \
    || die "no TFLite runtime importable in $VENV"
fi

systemd systemctl daemon-reload
if [ "$START" = 1 ]; then
  systemd systemctl enable --now "$UNIT_NAME"
  if [ "$SYSTEM" = 1 ] && [ "$SYSTEMD" = 1 ]; then
    say "started: journalctl -u ${UNIT_NAME%.service} -f; curl http://$HOST:$PORT/v2/health/ready"
  fi
fi
say "installed edgeserve agent (profile $PROFILE) in $VENV"
