#!/bin/bash
# Build the pxed management OS: a Debian kernel and a small initramfs.
#
#   mgmtos/build.sh OUTDIR        (as root, on Debian bookworm; from a clone)
#
# The script and the files it packs are installed with pxed (pxed/mgmtos/),
# and pxed runs it by itself at start when the management OS is missing
# (the mgmtos_build setting).  It writes OUTDIR/vmlinuz and
# OUTDIR/initramfs, which pxed serves from its static dir:
#
#   mgmtos/build.sh /var/lib/pxed/static/mgmtos/x86_64
#
# Everything comes from Debian packages: the kernel is the one
# linux-image-amd64 depends on now (downloaded with apt-get, kept in the
# cache dir $PXED_MGMTOS_CACHE, default /var/cache/pxed/mgmtos, which the
# tests and pxed's own build share), the rest is busybox-static, curl, zstd,
# openssl, dmidecode and GNU tee/dd/sha256sum (coreutils) of this host with
# their shared libraries (packages it lacks are installed first).  A second
# run reuses the cached package and the modules picked from it, and takes a
# few seconds.
#
# Environment: EXTRA_MODULES="mod1 mod2" adds kernel modules (with their
# dependencies) to the initramfs; KERNEL_DEB=/path/to/linux-image-*.deb uses
# that package instead of asking apt; PXED_MGMTOS_CACHE the cache dir.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: build.sh OUTDIR}
CACHE=${PXED_MGMTOS_CACHE:-/var/cache/pxed/mgmtos}
ARCH=amd64

say() { echo "build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and creates device nodes)"
t_start=$(date +%s.%N)

# Several builds may run at once (a test run and a person): every build
# works in its own temporary dirs and publishes with rename.
mkdir -p "$CACHE/debs" "$CACHE/kernel"
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

# --- build host packages ------------------------------------------------------
need=()
for pkg in busybox-static curl zstd openssl kmod dmidecode; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; } ||
		die "cannot install ${need[*]}"
fi
for tool in busybox curl zstd openssl dmidecode depmod modprobe dpkg-deb apt-get apt-cache gzip ldd; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

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

# --- the initramfs tree ---------------------------------------------------------------
root=$tmp/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/share/pxed,etc,proc,sys,dev,run,tmp,mnt,root}
chmod 1777 "$root/tmp"
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

# curl, zstd, openssl and dmidecode (the agent's hardware inventory) with
# their libraries and the dynamic loader (at the paths ldd names); GNU tee, dd and sha256sum (libc only), which run
# several times faster than busybox's in the agent's pipes (busybox tee
# copies 1 KiB at a time).  They go in /usr/bin before the busybox applet
# links are made, so they win.
copy_with_libs() {
	local bin=$1 lib
	cp -L "$bin" "$root/usr/bin/$(basename "$bin")"
	ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
		if [ -e "$root$lib" ]; then continue; fi
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
for tool in curl zstd openssl dmidecode tee dd sha256sum; do
	copy_with_libs "$(command -v "$tool")"
done

# busybox and its applets
cp /bin/busybox "$root/bin/busybox"
file_is_static=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
case "$file_is_static" in *"not a dynamic executable"* | *"statically linked"*) ;; *) die "/bin/busybox is not static (install busybox-static)" ;; esac
"$root/bin/busybox" --list-full | while read -r applet; do
	if [ "$applet" = bin/busybox ] || [ -e "$root/$applet" ] || [ -L "$root/$applet" ]; then continue; fi
	# a GNU tool in /usr/bin shadows the applet in /bin too
	if [ -e "$root/usr/bin/$(basename "$applet")" ]; then continue; fi
	mkdir -p "$root/$(dirname "$applet")"
	ln -s /bin/busybox "$root/$applet"
done

# name resolution for curl (glibc: files and dns)
for lib in libnss_files.so.2 libnss_dns.so.2; do
	for dir in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
		if [ -e "$dir/$lib" ]; then
			mkdir -p "$root$dir"
			cp -L "$dir/$lib" "$root$dir/$lib"
			break
		fi
	done
done
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"

# kernel modules: the picked ones, their modules.dep, the load list
cp -a "$kcache/modules/lib" "$root/"
rm -f "$root/lib/modules/$kabi"/*.bin "$root/lib/modules/$kabi"/modules.symbols* "$root/lib/modules/$kabi"/modules.devname
cp "$kcache/pxed.modules" "$root/lib/modules/$kabi/pxed.modules"

# init, DHCP script, agent
install -m 755 "$HERE/init" "$root/init"
install -m 755 "$HERE/udhcpc.script" "$root/etc/udhcpc.script"
install -m 755 "$HERE/agent.sh" "$root/usr/share/pxed/agent.sh"
install -m 644 "$HERE/json.awk" "$root/usr/share/pxed/json.awk"
echo "$debver" >"$root/etc/pxed-mgmtos-kernel"

# Does curl run from the tree?  (the loader and every library are there)
chroot "$root" /usr/bin/curl --version >/dev/null || die "curl does not run inside the initramfs tree"
for tool in zstd openssl dmidecode tee dd sha256sum; do
	chroot "$root" "/usr/bin/$tool" --version >/dev/null 2>&1 || chroot "$root" "/usr/bin/$tool" version >/dev/null ||
		die "$tool does not run inside the initramfs tree"
done

# --- pack ---------------------------------------------------------------------------------
mkdir -p "$OUT"
# Same inputs, same bytes: fixed times, owners and inode numbers (not
# --ignore-devno: busybox cpio then zeroes the device nodes' numbers too).
find "$root" -mindepth 1 -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
	busybox cpio -o -H newc -R 0:0 --renumber-inodes 2>/dev/null) |
	gzip -6 -n >"$OUT/.initramfs.$$"
cp "$kcache/vmlinuz" "$OUT/.vmlinuz.$$"
mv "$OUT/.initramfs.$$" "$OUT/initramfs"
mv "$OUT/.vmlinuz.$$" "$OUT/vmlinuz"

size_i=$(stat -c %s "$OUT/initramfs")
size_k=$(stat -c %s "$OUT/vmlinuz")
took=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
say "kernel $kabi ($debver), $(wc -l <"$kcache/pxed.modules") modules listed"
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
