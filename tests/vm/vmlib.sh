# shellcheck shell=bash
# tests/vm/vmlib.sh: what the VM rigs share (vm.sh for x86-64, vm-arm64.sh
# for aarch64): apt and package helpers, module dependency order, quoting.
# Sourced; the caller defines die(), note() and host_packages().

apt_updated=0
apt_update() {
	[[ $apt_updated -eq 0 ]] || return 0
	note "running apt-get update"
	timeout -k 10 600 apt-get -q -o DPkg::Lock::Timeout=120 update >&2 ||
		die "apt-get update failed"
	apt_updated=1
}

# Changes whenever apt's package lists change.
apt_lists_key() {
	{ stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null || true; } | cksum | cut -d' ' -f1
}

missing_packages() {
	local p st
	for p in $(host_packages); do
		st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[[ $st == installed ]] || echo "$p"
	done
}

# Prints the module file names (without directory) for the module names
# given, dependencies first (what modprobe would load).  $1: the directory
# holding all candidate .ko files.
declare -A MOD_SEEN=() MOD_FILE=()
resolve_modules() {
	local dir=$1 m f deps d
	shift
	if [[ ${#MOD_FILE[@]} -eq 0 ]]; then
		for f in "$dir"/*.ko; do
			m=$(basename "$f" .ko)
			MOD_FILE[${m//-/_}]=$f
		done
	fi
	for m in "$@"; do
		m=${m//-/_}
		[[ -z ${MOD_SEEN[$m]:-} ]] || continue
		MOD_SEEN[$m]=1
		f=${MOD_FILE[$m]:-}
		[[ -n $f ]] || die "module $m not found in the kernel image"
		deps=$(modinfo -F depends "$f")
		for d in ${deps//,/ }; do
			resolve_modules "$dir" "$d"
		done
		basename "$f"
	done
}

# Quotes $1 for a POSIX shell.
shquote() {
	printf "'%s'" "${1//\'/\'\\\'\'}"
}
