# Shared by scripts/*: repository root, package installation, builds.
# Sourced, not run.

GRANULE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Install the Debian packages named in the given list files (one package per
# line, '#' comments) that are not installed yet. Needs root for apt-get.
granule_install_packages() {
  local missing=() pkg file
  for file in "$@"; do
    [ -f "$file" ] || continue
    while read -r pkg; do
      pkg=${pkg%%#*}
      pkg=${pkg//[[:space:]]/}
      [ -n "$pkg" ] || continue
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done <"$file"
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "granule: installing ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >&2 || true
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Configure (once) and build a build directory: granule_build DIR [meson args...]
granule_build() {
  local dir=$1
  shift
  if [ ! -f "$GRANULE_ROOT/$dir/build.ninja" ]; then
    meson setup "$GRANULE_ROOT/$dir" "$GRANULE_ROOT" "$@" >&2 || return 1
  fi
  ninja -C "$GRANULE_ROOT/$dir" >&2
}
