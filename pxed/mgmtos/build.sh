#!/bin/bash
# Build the pxed management OS: a Debian kernel and a small initramfs that
# runs pxed's Python agent (pxed/agent/).
#
#   mgmtos/build.sh OUTDIR        (as root, on Debian bookworm; from a clone)
#
# The script and the files it packs are installed with pxed (pxed/mgmtos/,
# pxed/agent/), and pxed runs it by itself at start when the management OS
# is missing (the mgmtos_build setting).  It writes OUTDIR/vmlinuz and
# OUTDIR/initramfs, which pxed serves from its static dir:
#
#   mgmtos/build.sh /var/lib/pxed/static/mgmtos/x86_64
#
# Everything comes from Debian packages, downloaded with apt-get into the
# cache dir $PXED_MGMTOS_CACHE (default /var/cache/pxed/mgmtos, which the
# tests and pxed's own build share) and unpacked with dpkg-deb, never
# installed: the kernel linux-image-amd64 depends on now, and the userland,
# the packages USERLAND names with everything they Depend or Pre-Depend on
# as apt resolves it today, less SKIP_PACKAGES, less the files TRIM names.
# So what the next Debian point release puts in those packages lands in the
# initramfs; only the exclusions are chosen by hand.  A second run reuses
# the cached packages, the modules picked from the kernel and the unpacked,
# trimmed and precompiled userland, and takes a few seconds.
#
# Environment: EXTRA_MODULES="mod1 mod2" adds kernel modules (with their
# dependencies) to the initramfs; KERNEL_DEB=/path/to/linux-image-*.deb uses
# that package instead of asking apt; PXED_MGMTOS_CACHE the cache dir.

set -euo pipefail
shopt -s nullglob
umask 022 # the archive's modes do not depend on the caller's umask

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: build.sh OUTDIR}
CACHE=${PXED_MGMTOS_CACHE:-/var/cache/pxed/mgmtos}
ARCH=amd64
AGENT=$(cd "$HERE/.." && pwd) # the pxed package: __init__.py and agent/

say() { echo "build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and creates device nodes)"
t_start=$(date +%s.%N)

# Several builds may run at once (a test run and a person): every build
# works in its own temporary dirs and publishes with rename.  They take
# turns all the same: apt-get fails at once on another apt-get's lock
# instead of waiting, and the second build finds the first one's cache.
mkdir -p "$CACHE/debs" "$CACHE/kernel" "$CACHE/userland"
command -v flock >/dev/null || die "flock not found: apt-get install util-linux"
exec 9>"$CACHE/build.lock"
flock 9
tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
cleanup() { rm -rf --one-file-system "$tmp"; rm -f "${OUT:?}/.initramfs.$$" "${OUT:?}/.vmlinuz.$$"; }
trap cleanup EXIT

# Modules loaded at boot, in this order, each after its dependencies (from
# modules.dep).  Names not in this kernel, or built into it, are skipped.
# The crypto ones first: ext4 (crc32c) and sd_mod/nvme (crct10dif) find
# them through the crypto API, which modules.dep does not show.
MODULES="
crc32c_generic crc32c-intel crct10dif_generic crct10dif-pclmul crc-t10dif
virtio_ring virtio virtio_pci virtio_net net_failover failover virtio_blk
scsi_mod virtio_scsi sd_mod
libata ahci ata_piix nvme xen-blkfront
e1000 e1000e igb igc ixgbe r8169 realtek tg3 vmxnet3 xen-netfront
loop ext4 vfat nls_cp437 nls_ascii nls_utf8
${EXTRA_MODULES:-}
"

# The userland: the agent's interpreter (python3 is python3-minimal's
# link to python3.11), the stdlib, zstandard for zstd images, dmidecode
# for the inventory, e2fsprogs' e2fsck and resize2fs to grow an image's
# ext4 to its disk, and busybox for init, DHCP and the agent's mount,
# losetup, blockdev, sync, reboot and poweroff.
USERLAND="busybox-static dmidecode python3-minimal python3.11-minimal libpython3.11-stdlib python3-zstandard e2fsprogs"

# Dependencies not followed (nor anything only they would bring):
# - dpkg, debconf, perl-base: the packages are unpacked, never configured;
#   their maintainer scripts (which these run) never run here.
# - tzdata: the management OS has no time zone but UTC.
# - libreadline8, readline-common, libncursesw6, libtinfo6: line editing
#   and curses for an interactive python3; nobody types at this one
#   (readline, _curses and _curses_panel go with them, in TRIM).
# - libsqlite3-0, libdb5.3: the _sqlite3 and _dbm modules' databases.
# - libnsl2, libtirpc3: the deprecated nis module's NIS client (and the
#   Kerberos libraries libtirpc3 brings).
SKIP_PACKAGES="dpkg debconf perl-base tzdata libreadline8 readline-common libncursesw6 libtinfo6
libsqlite3-0 libdb5.3 libnsl2 libtirpc3"

# Files removed from the unpacked packages (globs under the tree's root).
# Nothing at run time reads them.  (Not expanded here: under the tree.)
set -f
TRIM=(
	# documentation, translations, packaging metadata, desktop entries
	usr/share/{doc,doc-base,man,info,locale,lintian,bug,menu,applications,pixmaps}
	usr/share/binfmts usr/lib/binfmt.d
	# hooks for tools of a full system: initramfs-tools, valgrind, dpkg's
	# byte-compiling triggers (this build compiles, below)
	usr/share/initramfs-tools usr/lib/valgrind
	usr/bin/py3compile usr/bin/py3clean usr/bin/py3versions usr/share/python3
	# glibc's iconv modules (Python has its own codecs), its vector math
	# library and its debugging and profiling preloads: nothing here links
	# or loads them
	{usr/,}lib/*-linux-gnu/gconv
	{usr/,}lib/*-linux-gnu/{libmvec.so,libmemusage.so,libpcprofile.so,libc_malloc_debug.so,libthread_db.so}*
	# expat's wide-character build (pyexpat links libexpat.so.1)
	{usr/,}lib/*-linux-gnu/libexpatw.so*
	# the stdlib's test suites, test modules, GUIs and developer tools
	usr/lib/python3.*/{test,unittest,doctest.py,idlelib,tkinter,turtledemo,turtle.py}
	usr/lib/python3.*/{ensurepip,venv,lib2to3,pydoc_data}
	usr/lib/python3.*/lib-dynload/{_test,_ctypes_test,_xxtestfuzz,xxlimited}*
	usr/bin/{pdb3,pydoc3,pygettext3}*
	# the extension modules whose libraries SKIP_PACKAGES leaves out, and
	# the Python packages that wrap them
	usr/lib/python3.*/lib-dynload/{_sqlite3,_curses,_curses_panel,readline,_dbm,nis}.*
	usr/lib/python3.*/{sqlite3,curses}
	# e2fsprogs' tools but e2fsck and resize2fs (grow.py runs those two),
	# and logsave, which only its boot scripts use
	{usr/,}sbin/{badblocks,debugfs,dumpe2fs,e2freefrag,e2fsck.static,e2image,e2label,e2mmpstatus}
	{usr/,}sbin/{e2scrub*,e2undo,e4crypt,e4defrag,filefrag,fsck.ext*,mke2fs,mkfs.ext*,mklost+found}
	{usr/,}sbin/{tune2fs,logsave} usr/bin/{chattr,lsattr} usr/lib/*/e2fsprogs
	{usr/,}lib/udev {usr/,}lib/systemd etc/cron.d etc/e2scrub.conf etc/mke2fs.conf
	# the CJK codecs (to Python what gconv is to glibc)
	usr/lib/python3.*/lib-dynload/{_codecs_,_multibytecodec}*
	usr/lib/python3.*/encodings/{big5*,cp932,cp949,cp950,euc_*,gb*,hz,iso2022_*,johab,shift_jis*}.py
)
set +f

# The initramfs is zstd -19.  This kernel unpacks gzip, zstd and xz (its
# config has RD_GZIP, RD_ZSTD, RD_XZ).  On this tree (44.5 MB of cpio)
# gzip -6 makes 16.3 MB, zstd -19 12.1 MB, xz -9 11.0 MB, and the kernel
# unpacks them under QEMU TCG in 0.9 s, 0.9 s and 3.2-3.8 s: zstd is
# within a tenth of xz's size at gzip's speed.  (Not --ultra -22: its
# 128 MB window is memory the kernel would have to find while it
# unpacks.)  Its output depends on the level, not on the thread count.
# The userland and the modules are compressed once per cached version;
# each build compresses only pxed's files, and the kernel unpacks the
# concatenated archives one after another.
compress() { zstd -q -19 -T2; }
CEXT=zst

in_tree() { # run a command inside a tree, with a clean environment
	local dir=$1
	shift
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONHASHSEED=0 LC_ALL=C chroot "$dir" "$@"
}

pack() { # DIR OUTFILE: DIR as one compressed newc archive, same inputs same bytes
	# Fixed times, owners and inode numbers (not --ignore-devno: busybox
	# cpio then zeroes the device nodes' numbers too).
	find "$1" -mindepth 1 -exec touch -h -d @0 {} +
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
		"$busybox" cpio -o -H newc -R 0:0 --renumber-inodes 2>/dev/null) | compress >"$2"
}

publish() { # TMPDIR FINAL: move a finished cache entry in place, or keep the one another build made
	mv -T "$1" "$2" 2>/dev/null || [ -d "$2" ] || die "cannot publish $2"
}

# --- build host tools -----------------------------------------------------------
need=()
for pkg in kmod zstd; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; } ||
		die "cannot install ${need[*]}"
fi
for tool in zstd depmod modprobe dpkg-deb apt-get apt-cache chroot sha256sum; do
	command -v "$tool" >/dev/null || die "$tool not found"
done
if [ ! -f "$AGENT/__init__.py" ] || [ ! -f "$AGENT/agent/__main__.py" ]; then
	die "pxed's agent is not beside this script (expected $AGENT/agent/__main__.py)"
fi

# --- the kernel package ---------------------------------------------------------
resolve_kernel() {
	# linux-image-amd64 is a metapackage: its one dependency is the real
	# linux-image-<abi>-amd64 package.
	local meta=linux-image-$ARCH real ver
	real=$(apt-cache depends "$meta" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$real" ]; then
		apt-get update -q >/dev/null 2>&1 || true
		real=$(apt-cache depends "$meta" 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	fi
	[ -n "$real" ] || return 1
	ver=$(apt-cache policy "$real" | awk '$1 == "Candidate:" { print $2; exit }')
	[ -n "$ver" ] && [ "$ver" != "(none)" ] || return 1
	echo "$real $ver"
}

if [ -n "${KERNEL_DEB:-}" ]; then
	[ -f "$KERNEL_DEB" ] || die "KERNEL_DEB=$KERNEL_DEB: no such file"
	deb=$KERNEL_DEB
elif read -r kpkg kver < <(resolve_kernel); then
	deb=$CACHE/debs/${kpkg}_${kver//:/%3a}_${ARCH}.deb
	if [ ! -s "$deb" ]; then
		say "downloading $kpkg $kver"
		mkdir -p "$tmp/dl"
		(cd "$tmp/dl" && apt-get -q -o APT::Sandbox::User=root download "$kpkg=$kver" >/dev/null) ||
			die "apt-get download $kpkg=$kver failed"
		[ -s "$tmp/dl/$(basename "$deb")" ] || die "apt-get download did not leave $(basename "$deb")"
		mv "$tmp/dl/$(basename "$deb")" "$deb"
		# older kernel packages are not needed any more
		for old in "$CACHE"/debs/linux-image-*.deb; do
			if [ "$old" != "$deb" ]; then rm -f "$old"; fi
		done
	fi
else
	# No package lists (offline?): the newest cached package, if any.
	deb=$(ls -t "$CACHE"/debs/linux-image-*-"$ARCH"_*.deb 2>/dev/null | head -n 1 || true)
	[ -n "$deb" ] || die "cannot resolve linux-image-$ARCH with apt-cache, and nothing is cached"
	say "warning: apt-cache cannot resolve linux-image-$ARCH; using the cached $(basename "$deb")"
fi
debver=$(dpkg-deb -f "$deb" Package)_$(dpkg-deb -f "$deb" Version)
say "kernel package: $(basename "$deb")"

# --- the kernel and the modules picked from it (cached per package + list) ----------
modlist=$(echo $MODULES | tr ' ' '\n' | awk 'NF && !seen[$0]++')
kcache=$CACHE/kernel/${debver//:/%3a}
stamp=$(printf '%s\n' "$modlist" | sha256sum | cut -c1-16)
if [ "$(cat "$kcache/stamp" 2>/dev/null)" != "$stamp" ]; then
	say "unpacking the kernel package and picking modules"
	final=$kcache
	kcache=$tmp/kernel
	mkdir -p "$tmp/unpack" "$kcache"
	dpkg-deb -x "$deb" "$tmp/unpack"
	kabi=$(ls "$tmp/unpack/lib/modules")
	[ "$(echo "$kabi" | wc -l)" = 1 ] || die "expected one kernel in the package, found: $kabi"
	cp "$tmp/unpack/boot/vmlinuz-$kabi" "$kcache/vmlinuz"
	echo "$kabi" >"$kcache/release"
	depmod -b "$tmp/unpack" "$kabi"
	src=$tmp/unpack/lib/modules/$kabi
	dst=$kcache/modules/lib/modules/$kabi
	mkdir -p "$dst"
	cp "$src"/modules.builtin "$src"/modules.order "$dst"/
	[ -f "$src/modules.builtin.modinfo" ] && cp "$src/modules.builtin.modinfo" "$dst"/
	# Every wanted module with its dependencies and soft dependencies, in
	# modprobe's insmod order.
	: >"$kcache/pxed.modules"
	for m in $modlist; do
		if ! deps=$(modprobe -d "$tmp/unpack" -S "$kabi" --show-depends "$m" 2>/dev/null); then
			say "note: no module $m in $kabi (skipped)"
			continue
		fi
		echo "$deps" | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
			rel=${ko#"$src"/}
			mkdir -p "$dst/$(dirname "$rel")"
			cp "$ko" "$dst/$rel"
		done
		if echo "$deps" | grep -q '^insmod '; then echo "$m" >>"$kcache/pxed.modules"; fi
	done
	depmod -b "$kcache/modules" "$kabi"
	rm -rf "$tmp/unpack"
	echo "$stamp" >"$kcache/stamp"
	# publish: replace an older pick, or keep one another build just made
	rm -rf --one-file-system "$final.old.$$"
	[ -d "$final" ] && mv "$final" "$final.old.$$"
	mv -T "$kcache" "$final" 2>/dev/null || true
	rm -rf --one-file-system "$final.old.$$"
	kcache=$final
fi
kabi=$(cat "$kcache/release")

# --- the userland packages ----------------------------------------------------------
# USERLAND and the closure of their Depends and Pre-Depends, in one apt-cache
# call: of a dependency's alternatives (a | b, or the providers of a virtual
# package) one already chosen, else the first that is a real package and
# not skipped; a skipped package's own dependencies are not followed.
closure() {
	apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
		--no-replaces --no-enhances $USERLAND 2>/dev/null | awk -v roots="$USERLAND" -v skip="$SKIP_PACKAGES" '
		function endgroup() { if (alts != "") group[pkg, ++ngroups[pkg]] = alts; alts = "" }
		/^[^ ]/ { endgroup(); pkg = $1; real[pkg] = (pkg !~ /^</); next }
		/^ [ |](Pre)?Depends: / {
			if (!either) endgroup()
			either = ($1 ~ /^\|/)
			name = $2; sub(/:any$/, "", name)
			if (name !~ /^</) alts = alts " " name
			next
		}
		/^    [^ ]/ { name = $1; sub(/:any$/, "", name); alts = alts " " name; next }
		END {
			endgroup()
			n = split(skip, s, " "); for (i = 1; i <= n; i++) skipped[s[i]] = 1
			n = split(roots, queue, " ")
			for (i = 1; i <= n; i++) { if (!real[queue[i]]) exit 1; chosen[queue[i]] = 1 }
			for (q = 1; q <= n; q++) {
				p = queue[q]
				for (g = 1; g <= ngroups[p]; g++) {
					k = split(group[p, g], alt, " ")
					pick = ""
					for (j = 1; j <= k; j++) if (alt[j] in chosen) { pick = "-"; break }
					for (j = 1; j <= k && pick == ""; j++)
						if (!(alt[j] in skipped) && real[alt[j]]) pick = alt[j]
					if (pick != "" && pick != "-") { chosen[pick] = 1; queue[++n] = pick }
				}
			}
			for (q = 1; q <= n; q++) print queue[q]
		}' | LC_ALL=C sort
}
# "name_version_arch.deb" (the file apt-get download writes) of each
# package's candidate version, with its size.
candidates() {
	apt-get download --print-uris "$@" 2>/dev/null | awk '{ print $2, $3 }' | LC_ALL=C sort
}

pkgs=$(closure) || pkgs=""
if [ -z "$pkgs" ]; then
	apt-get update -q >/dev/null 2>&1 || true
	pkgs=$(closure) || pkgs=""
fi
if [ -n "$pkgs" ] && wanted=$(candidates $pkgs) && [ "$(echo "$wanted" | wc -l)" = "$(echo "$pkgs" | wc -l)" ]; then
	fetch=()
	while read -r file size; do
		[ "$(stat -c %s "$CACHE/debs/$file" 2>/dev/null)" = "$size" ] || fetch+=("${file%%_*}")
	done <<<"$wanted"
	if [ ${#fetch[@]} -gt 0 ]; then
		say "downloading ${#fetch[@]} packages: ${fetch[*]}"
		mkdir -p "$tmp/dl"
		(cd "$tmp/dl" && apt-get -q -o APT::Sandbox::User=root download "${fetch[@]}" >/dev/null) ||
			die "apt-get download ${fetch[*]} failed"
		for f in "$tmp"/dl/*.deb; do mv "$f" "$CACHE/debs/"; done
	fi
	debs=()
	while read -r file size; do
		[ -s "$CACHE/debs/$file" ] || die "apt-get download did not leave $file"
		debs+=("$CACHE/debs/$file")
	done <<<"$wanted"
	# Only the current versions stay (and the kernel, handled above).
	for f in "$CACHE"/debs/*.deb; do
		case " ${debs[*]} " in *" $f "*) ;; *) case "$(basename "$f")" in linux-image-*) ;; *) rm -f "$f" ;; esac ;; esac
	done
else
	# No package lists (offline?): what is cached, if anything.
	debs=()
	for f in "$CACHE"/debs/*.deb; do case "$(basename "$f")" in linux-image-*) ;; *) debs+=("$f") ;; esac; done
	[ ${#debs[@]} -gt 0 ] || die "cannot resolve $USERLAND with apt-cache, and nothing is cached"
	say "warning: apt-cache cannot resolve the userland packages; using the ${#debs[@]} cached ones"
fi

# --- the userland tree (cached per package versions + this script) --------------------
ukey=$({ printf '%s\n' "${debs[@]##*/}"; sha256sum <"${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
ucache=$CACHE/userland/$ukey
if [ ! -s "$ucache/userland.cpio.$CEXT" ]; then
	say "unpacking ${#debs[@]} packages, trimming and compiling the userland"
	work=$tmp/userland
	root=$work/tree
	busybox=$root/bin/busybox
	mkdir -p "$root"
	for d in "${debs[@]}"; do dpkg-deb -x "$d" "$root"; done
	(cd "$root" && for pattern in "${TRIM[@]}"; do
		for path in $pattern; do rm -rf --one-file-system "./$path"; done
	done)
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,mnt,root}
	chmod 1777 "$root/tmp"
	mknod -m 600 "$root/dev/console" c 5 1
	mknod -m 666 "$root/dev/null" c 1 3
	echo "hosts: files dns" >"$root/etc/nsswitch.conf"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	echo "root:x:0:" >"$root/etc/group"

	# busybox's applets, where no package put a program
	[ -x "$root/bin/busybox" ] || die "busybox-static left no /bin/busybox"
	"$root/bin/busybox" --list-full | while read -r applet; do
		if [ -e "$root/$applet" ] || [ -L "$root/$applet" ]; then continue; fi
		mkdir -p "$root/$(dirname "$applet")"
		ln -s /bin/busybox "$root/$applet"
	done

	# Precompiled, sourceless: an import under QEMU TCG compiles nothing,
	# and the sources would add about a tenth to the archive.  Hash-based
	# and unchecked, so the files' times do not matter.
	stdlib=$(cd "$root" && echo usr/lib/python3.[0-9]*)
	[ -d "$root/$stdlib" ] || die "no python3 stdlib in the tree (found: ${stdlib:-nothing})"
	in_tree "$root" /usr/bin/python3 -m compileall -q -b --invalidation-mode unchecked-hash \
		/usr/lib/python3 "/$stdlib" >/dev/null || die "python3 cannot compile its stdlib"
	find "$root/usr/lib/python3" "$root/$stdlib" -name '*.py' \
		-exec sh -c 'for f; do [ ! -f "${f}c" ] || rm "$f"; done' sh {} +

	# Every extension module kept loads: the libraries it links are there.
	in_tree "$root" /usr/bin/python3 -c '
import importlib, pathlib, sys, sysconfig
dynload = pathlib.Path(sysconfig.get_path("platstdlib")) / "lib-dynload"
bad = []
for so in sorted(dynload.glob("*.so")):
    name = so.name.split(".")[0]
    try:
        importlib.import_module(name)
    except Exception as e:
        bad.append(f"{name}: {e}")
sys.exit("; ".join(bad) or None)' || die "an extension module of python3 does not load in the tree (above)"

	pack "$root" "$work/userland.cpio.$CEXT"
	# Only the current userland stays.
	for old in "$CACHE"/userland/*; do [ "$old" = "$ucache" ] || rm -rf --one-file-system "$old"; done
	publish "$work" "$ucache"
fi
busybox=$ucache/tree/bin/busybox

# The modules' archive, beside the modules (made once per pick).
if [ ! -s "$kcache/modules.cpio.$CEXT" ]; then
	mkdir -p "$tmp/modroot"
	cp -a "$kcache/modules/lib" "$tmp/modroot/"
	mods=$tmp/modroot/lib/modules/$kabi
	rm -f "$mods"/*.bin "$mods"/modules.symbols* "$mods"/modules.devname
	cp "$kcache/pxed.modules" "$mods/pxed.modules"
	pack "$tmp/modroot" "$tmp/modules.cpio.$CEXT"
	for f in "$kcache"/modules.cpio.*; do [ "$f" = "$kcache/modules.cpio.$CEXT" ] || rm -f "$f"; done
	mv "$tmp/modules.cpio.$CEXT" "$kcache/modules.cpio.$CEXT"
fi

# --- pxed's files: init, DHCP script, agent -----------------------------------------------
# A copy of the userland to check the agent in; only what this step adds
# (the "top" tree) is packed, after the cached archives.
check=$tmp/check
top=$tmp/top
cp -a "$ucache/tree" "$check"
mkdir -p "$top/etc" "$top/usr/lib/pxed/pxed"
install -m 755 "$HERE/init" "$top/init"
install -m 755 "$HERE/udhcpc.script" "$top/etc/udhcpc.script"
echo "$debver" >"$top/etc/pxed-mgmtos-kernel"
install -m 644 "$AGENT/__init__.py" "$top/usr/lib/pxed/pxed/__init__.py"
(cd "$AGENT" && find agent -name '*.py' -not -path '*/__pycache__/*') | while read -r f; do
	install -D -m 644 "$AGENT/$f" "$top/usr/lib/pxed/pxed/$f"
done
# The agent keeps its sources (its tracebacks show its lines) beside
# unchecked hash-based bytecode.
cp -a "$top/usr/lib/pxed" "$check/usr/lib/"
in_tree "$check" /usr/bin/python3 -m compileall -q --invalidation-mode unchecked-hash /usr/lib/pxed >/dev/null ||
	die "python3 cannot compile the agent"
rm -rf "$top/usr/lib/pxed"
cp -a "$check/usr/lib/pxed" "$top/usr/lib/"

# What the agent needs, run as init will run it.
in_tree "$check" /usr/bin/python3 -c 'import hashlib, zlib, ssl, json, http.client, zstandard, ctypes' ||
	die "python3 in the initramfs cannot import hashlib, zlib, ssl, json, http.client, zstandard and ctypes (above)"
in_tree "$check" /usr/bin/python3 -c 'import hashlib, sys; sys.exit(hashlib.sha256.__module__ != "_hashlib")' ||
	die "python3 in the initramfs hashes sha256 without OpenSSL (hashlib.sha256 is not _hashlib's)"
in_tree "$check" /usr/bin/env PYTHONPATH=/usr/lib/pxed /usr/bin/python3 -m pxed.agent --help >/dev/null ||
	die "'python3 -m pxed.agent --help' fails in the initramfs (above)"
in_tree "$check" /usr/sbin/dmidecode --version >/dev/null || die "dmidecode does not run in the initramfs"
# grow.py's two (resize2fs has no --version: its usage starts with it)
in_tree "$check" /sbin/e2fsck -V >/dev/null 2>&1 || die "e2fsck does not run in the initramfs"
usage=$(in_tree "$check" /sbin/resize2fs 2>&1 || true) # it exits 1 after its usage
[[ $usage == resize2fs\ * ]] || die "resize2fs does not run in the initramfs: $usage"
for applet in sh mount umount losetup blockdev sync reboot poweroff ip ifconfig udhcpc insmod awk tee mkfifo; do
	[ -e "$check/bin/$applet" ] || [ -e "$check/sbin/$applet" ] || [ -e "$check/usr/bin/$applet" ] ||
		[ -e "$check/usr/sbin/$applet" ] || die "busybox in the initramfs has no $applet"
done

# --- pack -------------------------------------------------------------------------------------
mkdir -p "$OUT"
pack "$top" "$tmp/top.cpio.$CEXT"
cat "$ucache/userland.cpio.$CEXT" "$kcache/modules.cpio.$CEXT" "$tmp/top.cpio.$CEXT" >"$OUT/.initramfs.$$"
cp "$kcache/vmlinuz" "$OUT/.vmlinuz.$$"
mv "$OUT/.initramfs.$$" "$OUT/initramfs"
mv "$OUT/.vmlinuz.$$" "$OUT/vmlinuz"

size_i=$(stat -c %s "$OUT/initramfs")
size_k=$(stat -c %s "$OUT/vmlinuz")
took=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
say "kernel $kabi ($debver), $(wc -l <"$kcache/pxed.modules") modules listed"
say "initramfs: userland $(stat -c %s "$ucache/userland.cpio.$CEXT") bytes (${#debs[@]} packages)," \
	"modules $(stat -c %s "$kcache/modules.cpio.$CEXT"), pxed $(stat -c %s "$tmp/top.cpio.$CEXT") ($CEXT)"
say "built in $took s: $OUT/vmlinuz ($size_k bytes), $OUT/initramfs ($size_i bytes)"
cat <<EOF

# pxed serves these from its static dir: copy $OUT/vmlinuz and
# $OUT/initramfs to <static_dir>/mgmtos/x86_64/ (or build straight there:
# build.sh <static_dir>/mgmtos/x86_64).  In pxed.toml:

static_dir = "/var/lib/pxed/static"      # the dir that holds mgmtos/x86_64/

[mgmtos.x86_64]
kernel = "mgmtos/x86_64/vmlinuz"
initrd = ["mgmtos/x86_64/initramfs"]
cmdline = "console=ttyS0,115200 console=tty0"
# pxed appends pxed.url=, pxed.mac= and pxed.token= (and pxed.mode=enlist
# for an unknown machine enlisting).  Optional here:
# pxed.after=poweroff (default reboot), pxed.debug=1.
EOF
