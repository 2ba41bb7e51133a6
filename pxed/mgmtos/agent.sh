#!/bin/sh
# pxed management OS agent (busybox ash).
#
# Disk mapping rule
# -----------------
# The images of a setup go, in the order BootInform lists them, to the
# machine's disks in kernel name order: the first image to the first disk,
# the second to the second, and so on (each BootInform entry names its disk
# by that index, "Disk"; the machine image's entry has none and is not
# written to a disk).  The disks are the whole-disk entries
# of /sys/block named vd*, sd*, nvme<N>n<M>, xvd* or hd* -- never loop, ram,
# sr (CD/DVD), zram, md or dm devices, hidden NVMe multipath paths, or a disk
# of size 0 (a card reader without a card).  "Kernel name order" sorts the
# names shortest first, then alphabetically, which is the order the kernel
# hands the names out in: sda .. sdz, sdaa; vda before vdb; nvme0n1 ..
# nvme9n1, nvme10n1.  Across kinds the same rule applies (hd*, sd*, vd*
# before xvd*, before nvme*).  A setup with more images than the machine has
# disks fails with a message naming both counts; disks beyond the images are
# left alone.  An image flagged Update is first captured from its disk (the
# same mapping), then every image is written.
#
# What it does
# ------------
#  1. reads pxed.url, pxed.mac, pxed.token (and pxed.mode=enlist,
#     pxed.after=reboot|poweroff, pxed.debug=1) from the kernel command line;
#     in enlist mode (an unknown machine) it only sends the inventory (see
#     2b) with its enlistment credential, then powers off or reboots;
#  2. GET {url}/machine/{mac}/boot (BootInform: the original's ImageSetup,
#     Images[N] = {Image:{UUID, Name, ImageFileType, Type...},
#     Version:{Version...}, Update} plus pxed's URL, UploadURL, Size,
#     Sha256, DiskCompressionStrategy, Disk).  404: no work, log it and
#     reboot without reporting anything (after 2b);
#  2b. sends the hardware inventory (PUT {url}/machine/{mac}/hardware: CPU,
#     memory, disks, NICs, firmware, DMI from /proc, /sys and dmidecode);
#     on every boot, work or not; a refusal is logged, not fatal;
#  3. for each image flagged Update: reads its whole disk, compresses it as
#     the image's DiskCompressionStrategy says (none, gzip, zstd) and
#     streams it to the image's UploadURL; the sha256 pxed computed must be
#     the one of the bytes sent; a read or compression error aborts the
#     upload mid-stream, so pxed stores nothing;
#  4. for each image: streams URL -> sha256 of the stored bytes (a FIFO
#     beside the pipe) -> decompress -> the disk, then fsync; the sha256 and
#     the size must be BootInform's, or the setup fails; meanwhile the bytes
#     written are reported every 2 s (POST {url}/machine/{mac}/progress);
#  5. downloads the machine image (small, to /tmp), records this boot in
#     /pxed/ on it when it can mount it (ext4 over a loop device), uploads it
#     back as a new version;
#  6. POST {url}/machine/{mac}/boot/complete {"Success", "Message"}: true, or
#     false with the step and the reason of any failure;
#  7. reboot -f (or poweroff -f).
# Log lines go to the console ("pxed-agent: ...") and to POST {url}/log.

set -e
umask 077
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

HERE=$(dirname "$0")
JSON_AWK=$HERE/json.awk
WORK=$(mktemp -d /tmp/pxed-agent.XXXXXX)

URL='' MAC='' TOKEN='' MODE=deploy AFTER=${PXED_AFTER:-reboot} DEBUG=${PXED_DEBUG:-0}
STEP="starting"
REPORTED=0 # complete was sent (or must not be sent): no more /log, no second report
CAN_REPORT=0 # BootInform answered with work: complete may be sent

# --- small helpers ---------------------------------------------------------

now() { awk '{print $1}' /proc/uptime; } # seconds since boot, 1/100 s
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
rate() { # bytes seconds -> "12.3 MB/s"
	awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.01; printf "%.1f MB/s", b / s / 1000000 }'
}

# A JSON string literal for $1 (quotes included), at most $2 bytes of it
# (pxed takes log lines up to 16000 characters, completion messages up to
# 4000).
json_str() {
	printf '%s' "$1" | head -c "${2:-15000}" | tr -d '\000-\010\013\014\016-\037' | awk '
		BEGIN { ORS = ""; printf "\"" }
		{
			gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r")
			if (NR > 1) printf "\\n"
			printf "%s", $0
		}
		END { printf "\"" }'
}

# Value of a flattened JSON path (see json.awk) from file $1.
jget() { awk -F '\t' -v k="$2" '$1 == k { sub(/^[^\t]*\t/, ""); print; exit }' "$1"; }

# curl with the machine credential (from a config file: not on argv).
pcurl() { curl -K "$WORK/curl.conf" "$@"; }

console() { echo "pxed-agent: $*" >&2; }

# log LEVEL MESSAGE: the console and pxed's /log (best effort, never fatal).
log() {
	level=$1
	shift
	[ "$level" = debug ] && [ "$DEBUG" != 1 ] && return 0
	if [ "$level" = info ]; then console "$*"; else console "$level: $*"; fi
	[ "$REPORTED" = 1 ] && return 0
	[ -n "$URL" ] && [ -f "$WORK/curl.conf" ] || return 0
	printf '{"Level":"%s","Message":%s,"Origin":"mgmtos"}' "$level" "$(json_str "$*")" >"$WORK/log.json"
	pcurl -sS -o /dev/null --connect-timeout 5 --max-time 10 -X POST -H 'Content-Type: application/json' \
		--data-binary @"$WORK/log.json" "$URL/log" 2>/dev/null || true
	return 0
}

# report_complete true|false MESSAGE
report_complete() {
	[ "$REPORTED" = 1 ] && return 0
	REPORTED=1
	[ "$CAN_REPORT" = 1 ] || return 0
	printf '{"Success":%s,"Message":%s}' "$1" "$(json_str "$2" 3900)" >"$WORK/complete.json"
	code=$(pcurl -sS -o "$WORK/complete.out" -w '%{http_code}' --max-time 60 \
		--retry 5 --retry-delay 2 --retry-connrefused -X POST \
		-H 'Content-Type: application/json' --data-binary @"$WORK/complete.json" \
		"$URL/machine/$MAC/boot/complete" 2>"$WORK/complete.err") || true
	if [ "$code" = 200 ]; then
		console "reported to pxed: Success=$1"
	else
		console "error: could not report completion (HTTP $code): $(cat "$WORK/complete.err" "$WORK/complete.out" 2>/dev/null | head -c 500)"
	fi
}

after() {
	sync
	case "$AFTER" in
	poweroff | halt) console "powering off"; poweroff -f ;;
	*) console "rebooting"; reboot -f ;;
	esac
	sleep 30
	exit "${1:-0}"
}

# fail REASON: log, report Success=false with the step and reason, reboot.
fail() {
	trap - EXIT
	set +e
	log error "$STEP: $*"
	report_complete false "$STEP: $*"
	after 1
}

on_exit() {
	status=$?
	trap - EXIT
	[ "$REPORTED" = 1 ] && exit "$status"
	fail "the agent stopped unexpectedly (exit status $status)"
}
trap on_exit EXIT
trap 'fail "interrupted"' INT TERM HUP

# --- 1. the kernel command line ---------------------------------------------

STEP="reading the kernel command line"
for word in $(cat /proc/cmdline); do
	case "$word" in
	pxed.url=*) URL=${word#pxed.url=} ;;
	pxed.mac=*) MAC=${word#pxed.mac=} ;;
	pxed.token=*) TOKEN=${word#pxed.token=} ;;
	pxed.mode=*) MODE=${word#pxed.mode=} ;;
	pxed.after=*) AFTER=${word#pxed.after=} ;;
	pxed.debug=*) DEBUG=${word#pxed.debug=} ;;
	esac
done
URL=${URL%/}
case "$AFTER" in reboot | poweroff | halt) ;; *) AFTER=reboot ;; esac
if [ -z "$URL" ] || [ -z "$MAC" ] || [ -z "$TOKEN" ]; then
	console "error: pxed.url, pxed.mac and pxed.token must all be on the kernel command line"
	REPORTED=1
	after 1
fi
{
	echo 'silent'
	echo 'show-error'
	echo 'fail'
	echo 'connect-timeout = 15'
	echo "header = \"Authorization: Bearer $TOKEN\""
} >"$WORK/curl.conf"
[ "$DEBUG" = 1 ] && set -x

log info "management OS up: kernel $(uname -r), MAC $MAC, pxed at $URL, address(es) $(ip -4 -o addr show scope global 2>/dev/null | awk '{printf "%s%s", s, $4; s=" "}')"

# --- disks and the hardware inventory -------------------------------------------

list_disks() {
	for d in /sys/block/*; do
		name=${d##*/}
		case "$name" in
		vd* | sd* | xvd* | hd*) ;;
		nvme*c*n*) continue ;; # a multipath controller path, not a disk
		nvme[0-9]*n[0-9]*) ;;
		*) continue ;;
		esac
		[ "$(cat "$d/hidden" 2>/dev/null)" = 1 ] && continue
		[ "$(cat "$d/size" 2>/dev/null || echo 0)" -gt 0 ] || continue
		echo "${#name} $name"
	done | sort -k1,1n -k2,2 | awk '{print "/dev/" $2}'
}

disk_size() { # bytes
	if [ -b "$1" ]; then blockdev --getsize64 "$1"; else wc -c <"$1" | tr -d ' '; fi
}

# One line of a sysfs (or other) file, without control characters.
rd() { head -n 1 "$1" 2>/dev/null | tr -d '\000-\037' | head -c 255 || true; }

# A DMI string from dmidecode (the build puts it in), else from sysfs.
dmi() { # dmidecode keyword, sysfs name
	v=$(dmidecode -s "$1" 2>/dev/null | grep -v '^#' | head -n 1 | tr -d '\000-\037' || true)
	[ -n "$v" ] || v=$(rd "/sys/class/dmi/id/$2")
	printf '%s' "$v"
}

# The inventory as pxed takes it (pxed/web/inventory.py), into $WORK/hardware.json.
inventory() {
	cpu_model=$(awk -F ': *' '/^(model name|Processor|cpu model)[ \t]*:/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
	[ -n "$cpu_model" ] || cpu_model=$(dmidecode -s processor-version 2>/dev/null | grep -v '^#' | head -n 1 || true)
	cpus=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null || true)
	[ "${cpus:-0}" -gt 0 ] 2>/dev/null || cpus=1
	memory=$(awk '/^MemTotal:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo)
	if [ -d /sys/firmware/efi ]; then firmware=uefi; else firmware=bios; fi
	{
		printf '{"Arch":%s,"CPU":{"Model":%s,"Count":%s},"Memory":%s,"Firmware":"%s",' \
			"$(json_str "$(uname -m)" 16)" "$(json_str "$cpu_model" 255)" "$cpus" "${memory:-0}" "$firmware"
		printf '"DMI":{"Vendor":%s,"Product":%s,"Serial":%s},"Disks":[' \
			"$(json_str "$(dmi system-manufacturer sys_vendor)" 255)" \
			"$(json_str "$(dmi system-product-name product_name)" 255)" \
			"$(json_str "$(dmi system-serial-number product_serial)" 255)"
		sep=""
		for disk in $(list_disks); do
			name=${disk#/dev/}
			sys=/sys/block/$name
			serial=$(rd "$sys/serial")
			[ -n "$serial" ] || serial=$(rd "$sys/device/serial")
			case "$(rd "$sys/queue/rotational")" in 1) rot=true ;; 0) rot=false ;; *) rot=null ;; esac
			printf '%s{"Name":%s,"Size":%s,"Model":%s,"Serial":%s,"Rotational":%s}' "$sep" \
				"$(json_str "$name" 32)" "$(disk_size "$disk")" "$(json_str "$(rd "$sys/device/model")" 255)" \
				"$(json_str "$serial" 255)" "$rot"
			sep=,
		done
		printf '],"NICs":['
		sep=""
		for dev in /sys/class/net/*; do
			[ "$(rd "$dev/type")" = 1 ] && [ -e "$dev/device" ] || continue
			driver=$(readlink "$dev/device/driver" 2>/dev/null || true)
			speed=$(rd "$dev/speed")
			case "$speed" in '' | *[!0-9-]*) speed=null ;; esac
			if [ "$(rd "$dev/carrier")" = 1 ]; then link=true; else link=false; fi
			printf '%s{"MAC":"%s","Driver":%s,"Link":%s,"Speed":%s}' "$sep" "$(rd "$dev/address")" \
				"$(json_str "${driver##*/}" 64)" "$link" "$speed"
			sep=,
		done
		printf ']}'
	} >"$WORK/hardware.json"
}

# PUT the inventory; HW_CODE is the HTTP status (000: pxed unreachable).
send_inventory() {
	HW_CODE=000
	inventory || { console "warning: could not gather the hardware inventory"; return 0; }
	HW_CODE=$(pcurl --no-fail -o "$WORK/hw.out" -w '%{http_code}' --max-time 30 -X PUT \
		-H 'Content-Type: application/json' --data-binary @"$WORK/hardware.json" \
		"$URL/machine/$MAC/hardware" 2>"$WORK/hw.err") || HW_CODE=000
	case "$HW_CODE" in
	2??) log info "hardware inventory sent: $(head -c 400 "$WORK/hardware.json")" ;;
	*) log warning "hardware inventory not accepted (HTTP $HW_CODE): $(cat "$WORK/hw.err" "$WORK/hw.out" 2>/dev/null | head -c 300)" ;;
	esac
}

# --- enlist mode: an unknown machine registers itself, and that is all ----------

if [ "$MODE" = enlist ]; then
	# The enlistment credential can do nothing else: no log lines, no report.
	REPORTED=1
	STEP="enlisting"
	console "enlist mode: sending this machine's inventory to $URL"
	n=0
	while :; do
		send_inventory
		[ "$HW_CODE" != 000 ] && break
		n=$((n + 1))
		# The network may still be coming up: retry for about a minute.
		[ $n -lt 12 ] || break
		sleep 5
	done
	case "$HW_CODE" in
	2??) console "enlisted: the machine waits in pxed for an admin to accept it" ;;
	*) console "error: enlisting failed (HTTP $HW_CODE)" ;;
	esac
	trap - EXIT
	after 0
fi

# --- 2. BootInform -------------------------------------------------------------

STEP="asking pxed for work (GET /machine/$MAC/boot)"
n=0
while :; do
	code=$(curl -K "$WORK/curl.conf" --no-fail -o "$WORK/inform.json" -w '%{http_code}' \
		--max-time 60 "$URL/machine/$MAC/boot" 2>"$WORK/inform.err") || code=000
	[ "$code" != 000 ] && break
	n=$((n + 1))
	# The network may still be coming up: retry for about a minute.
	if [ $n -ge 12 ]; then
		console "error: pxed at $URL is unreachable: $(cat "$WORK/inform.err")"
		REPORTED=1
		after 1
	fi
	sleep 5
done
# The inventory goes on every boot; the network works by now.
send_inventory
if [ "$code" = 404 ]; then
	log info "no work for this machine ($(head -c 300 "$WORK/inform.json")): nothing to do"
	REPORTED=1
	after 0
fi
CAN_REPORT=1
[ "$code" = 200 ] || fail "HTTP $code: $(head -c 500 "$WORK/inform.json")"
awk -f "$JSON_AWK" "$WORK/inform.json" >"$WORK/inform" 2>"$WORK/json.err" ||
	fail "cannot parse the answer: $(cat "$WORK/json.err")"

WORK_ID=$(jget "$WORK/inform" ID)
# The entries written to a disk (those with a Disk index), in order; the
# machine image's entry has none.
DEPLOY=$(awk -F '\t' '$1 ~ /^Images\.[0-9]+\.Disk$/ && $2 ~ /^[0-9]+$/ { split($1, p, "."); print p[2] }' "$WORK/inform")
COUNT=$(echo $DEPLOY | wc -w)
# Disks needed: the highest Disk index plus one.
NEED=$(awk -F '\t' 'BEGIN { n = 0 } $1 ~ /^Images\.[0-9]+\.Disk$/ && $2 ~ /^[0-9]+$/ && $2 + 1 > n { n = $2 + 1 } END { print n }' "$WORK/inform")
log info "work $WORK_ID (setup $(jget "$WORK/inform" Name)): $COUNT image(s)"

# --- disks -----------------------------------------------------------------------

STEP="finding the disks"
DISKS=$(list_disks)
ndisks=$(echo "$DISKS" | grep -c . || true)
# Disk drivers (AHCI, NVMe, SCSI) probe asynchronously: wait up to 30 s for
# enough of them.
n=0
while [ "$ndisks" -lt "$NEED" ] && [ $n -lt 30 ]; do
	sleep 1
	n=$((n + 1))
	DISKS=$(list_disks)
	ndisks=$(echo "$DISKS" | grep -c . || true)
done
log info "disks: $(for d in $DISKS; do printf '%s%s (%s bytes)' "$sep" "$d" "$(disk_size "$d")"; sep=", "; done)"
[ "$ndisks" -ge "$NEED" ] ||
	fail "the setup has $COUNT image(s) but this machine has $ndisks disk(s) ($(echo $DISKS)); images go to disks in kernel name order, one each"

disk_for() { echo "$DISKS" | sed -n "$(($1 + 1))p"; } # Disk index -> disk

# Field $2 of BootInform entry $1 (Image.UUID, Version.Version, URL, ...).
img() { jget "$WORK/inform" "Images.$1.$2"; }

# The fastest tools at hand (measured under QEMU TCG and natively):
# OpenSSL's sha256 (SHA-NI where the CPU has it) over GNU's over busybox's;
# GNU tee and dd (busybox tee copies 1 KiB at a time, busybox dd prints no
# byte count); zstd also reads and writes gzip (through zlib, several times
# faster than busybox gzip).  The build puts openssl and GNU tee, dd and
# sha256sum in /usr/bin.  They are called by path: Debian's busybox-static
# shell runs its own applets before anything on PATH.
gnu() {
	if [ -x "/usr/bin/$1" ] && "/usr/bin/$1" --version 2>/dev/null | grep -q GNU; then
		echo "/usr/bin/$1"
	else
		echo "$1"
	fi
}
TEE=$(gnu tee)
DD=$(gnu dd)
# OpenSSL only where its assembly pays: SHA-NI or AVX2 (not under QEMU's
# default TCG CPU, where GNU sha256sum is faster).
if grep -q -w -E 'sha_ni|avx2' /proc/cpuinfo 2>/dev/null && command -v openssl >/dev/null 2>&1 &&
	echo | openssl dgst -sha256 -r >/dev/null 2>&1; then
	SHA256="openssl dgst -sha256 -r"
else
	SHA256=$(gnu sha256sum)
fi
if echo | zstd -q -c --format=gzip 2>/dev/null | zstd -q -dc --format=gzip >/dev/null 2>&1; then
	GZIP_C="zstd -q -c -1 --format=gzip" GZIP_D="zstd -q -dc --format=gzip"
else
	GZIP_C="gzip -1 -c" GZIP_D="gzip -dc"
fi

DD_FULLBLOCK=""
$DD if=/dev/null of=/dev/null iflag=fullblock 2>/dev/null && DD_FULLBLOCK="iflag=fullblock"

compressor() {
	case "$1" in
	none | "" | null) echo "cat" ;;
	gzip) echo "$GZIP_C" ;; # -1: fast; disks are mostly zeros or compressed data anyway
	zstd) echo "zstd -q -c -T0" ;;
	*) return 1 ;;
	esac
}
decompressor() {
	case "$1" in
	none | "" | null) echo "cat" ;;
	gzip) echo "$GZIP_D" ;;
	zstd) echo "zstd -q -dc" ;;
	*) return 1 ;;
	esac
}

# sha256 of what is written to FIFO $1, into file $2 (in the background).
sha_start() {
	rm -f "$1" "$2"
	mkfifo "$1"
	($SHA256 <"$1" | awk '{print $1}' >"$2") &
	SHA_PID=$!
}
# Waits for it (in this shell, not in $(...): it is our child) and removes
# the FIFO.  Opening the FIFO read-write once never blocks and releases a
# reader still waiting in open() when the pipeline never opened it.
sha_wait() {
	(exec 3<>"$1") 2>/dev/null || true
	wait "$SHA_PID" || true
	rm -f "$1"
}

# --- 3. captures ---------------------------------------------------------------

# A capture must never store a partial disk: when reading or compressing
# fails, curl is killed before the stream ends, so pxed sees an aborted
# upload (and keeps nothing) instead of a short but complete body.  The
# failing stage still holds its end of the pipe while it kills curl, so no
# end-of-stream can overtake the kill.
abort_upload() {
	: >"$WORK/up.aborted"
	n=0
	while [ ! -s "$WORK/up.pid" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
	kill "$(cat "$WORK/up.pid" 2>/dev/null)" 2>/dev/null || true
}
read_stage() {
	$DD if="$disk" bs=1M 2>"$WORK/read.err"
	status=$?
	echo $status >"$WORK/rc.read"
	# 141: SIGPIPE, the upload ended first (its own failure is reported)
	[ $status = 0 ] || [ $status = 141 ] || abort_upload
}
compress_stage() {
	$comp
	status=$?
	echo $status >"$WORK/rc.comp"
	[ $status = 0 ] || [ $status = 141 ] || abort_upload
}
upload_stage() {
	# this pipeline stage's pid (it becomes curl's), for abort_upload
	sh -c 'echo $PPID' >"$WORK/up.pid"
	exec curl -K "$WORK/curl.conf" -X POST -H 'Content-Type: application/octet-stream' -H 'Expect:' \
		-H 'Accept: application/json' -T - -o "$WORK/up.out" \
		-w '%{http_code} %{size_upload}' "$upload" >"$WORK/up.stat" 2>"$WORK/up.err"
}

capture() { # index
	i=$1
	uuid=$(img "$i" Image.UUID)
	name=$(img "$i" Image.Name)
	strategy=$(img "$i" DiskCompressionStrategy)
	upload=$(img "$i" UploadURL)
	disk=$(disk_for "$(img "$i" Disk)")
	STEP="capturing image $name ($uuid) from $disk"
	comp=$(compressor "$strategy") || fail "unknown DiskCompressionStrategy '$strategy'"
	[ -n "$upload" ] && [ "$upload" != null ] || fail "BootInform gave no UploadURL"
	size=$(disk_size "$disk")
	log info "capturing $disk ($size bytes, $strategy) into image $name ($uuid)"
	t0=$(now)
	sha_start "$WORK/up.fifo" "$WORK/up.sha"
	rm -f "$WORK/rc.read" "$WORK/rc.comp" "$WORK/up.pid" "$WORK/up.aborted" "$WORK/up.stat"
	echo 0 >"$WORK/rc.comp"
	# disk -> [compress] -> tee (sha256 on the side) -> curl, all streaming.
	set +e
	if [ "$comp" = cat ]; then
		read_stage | $TEE "$WORK/up.fifo" | upload_stage
	else
		read_stage | compress_stage | $TEE "$WORK/up.fifo" | upload_stage
	fi
	rc=$?
	set -e
	sha_wait "$WORK/up.fifo"
	sent_sha=$(cat "$WORK/up.sha" 2>/dev/null || true)
	read -r code sent <"$WORK/up.stat" || true
	if [ "$rc" != 0 ] && [ ! -e "$WORK/up.aborted" ]; then
		fail "upload failed (HTTP ${code:-?}): $(cat "$WORK/up.err") $(head -c 500 "$WORK/up.out" 2>/dev/null)"
	fi
	[ "$(cat "$WORK/rc.read" 2>/dev/null)" = 0 ] ||
		fail "reading $disk failed, upload aborted (nothing stored): $(grep -v -e records -e copied "$WORK/read.err" | head -n 3)"
	[ "$(cat "$WORK/rc.comp" 2>/dev/null)" = 0 ] || fail "$strategy compression failed, upload aborted (nothing stored)"
	[ "$rc" = 0 ] || fail "upload failed (HTTP ${code:-?}): $(cat "$WORK/up.err")"
	awk -f "$JSON_AWK" "$WORK/up.out" >"$WORK/up.flat" 2>/dev/null || true
	version=$(jget "$WORK/up.flat" Version)
	stored_sha=$(jget "$WORK/up.flat" Sha256)
	if [ -n "$stored_sha" ] && [ "$stored_sha" != "$sent_sha" ]; then
		fail "pxed stored sha256 $stored_sha but the agent sent $sent_sha"
	fi
	secs=$(elapsed "$t0")
	stored=$(jget "$WORK/up.flat" Size)
	log info "captured $uuid v${version:-?}: $size bytes from $disk in $secs s ($(rate "$size" "$secs")), ${stored:-$sent} bytes stored ($strategy), sha256 $sent_sha"
	CAPTURED="${CAPTURED:+$CAPTURED; }$name v${version:-?} <- $disk"
}

CAPTURED=""
for i in $DEPLOY; do
	[ "$(img "$i" Update)" = true ] && capture "$i"
done

# --- 4. deploys ------------------------------------------------------------------

download_stage() {
	# %{stderr} keeps the statistics off the data stream.
	pcurl -w '%{stderr}\nPXEDSTAT %{http_code} %{size_download}\n' "$url" 2>"$WORK/dl.err"
	echo $? >"$WORK/rc.dl"
}
write_stage() {
	# GNU dd (from the build): 1 MiB writes, fsync at the end, a byte count.
	$DD of="$disk" bs=1M $DD_FULLBLOCK conv=notrunc,fsync 2>"$WORK/write.err"
	echo $? >"$WORK/rc.write"
}

# Progress: the bytes the tee stage has read (what came from pxed and went
# on towards the disk), from its /proc/<pid>/io, reported every 2 s while
# an image is written (pxed wants a report at least every 5 s).
post_progress() { # uuid written total
	printf '{"Image":"%s","Written":%s,"Total":%s}' "$1" "$2" "$3" >"$WORK/progress.json"
	pcurl -o /dev/null --max-time 3 -X POST -H 'Content-Type: application/json' \
		--data-binary @"$WORK/progress.json" "$URL/machine/$MAC/progress" 2>/dev/null || true
}
progress_loop() { # uuid total (in the background; killed when the image is written)
	trap - EXIT INT TERM HUP
	while sleep 2; do
		pid=$(cat "$WORK/tee.pid" 2>/dev/null) || continue
		n=$(awk '$1 == "rchar:" { print $2 }' "/proc/$pid/io" 2>/dev/null) || continue
		case "$n" in '' | *[!0-9]*) continue ;; esac
		[ "$n" -le "$2" ] || n=$2
		post_progress "$1" "$n" "$2"
	done
}
tee_stage() {
	# this pipeline stage's pid (it becomes tee's), for progress_loop
	sh -c 'echo $PPID' >"$WORK/tee.pid"
	exec $TEE "$WORK/dl.fifo"
}

deploy() { # index
	i=$1
	uuid=$(img "$i" Image.UUID)
	name=$(img "$i" Image.Name)
	version=$(img "$i" Version.Version)
	want_sha=$(img "$i" Sha256)
	want_size=$(img "$i" Size)
	strategy=$(img "$i" DiskCompressionStrategy)
	ftype=$(img "$i" Image.ImageFileType)
	url=$(img "$i" URL)
	disk=$(disk_for "$(img "$i" Disk)")
	STEP="deploying image $name ($uuid) v$version to $disk"
	decomp=$(decompressor "$strategy") || fail "unknown DiskCompressionStrategy '$strategy'"
	case "$ftype" in
	raw | "" | null) ;;
	*) fail "ImageFileType '$ftype': this management OS writes raw images only" ;;
	esac
	case "$want_sha" in
	[0-9a-f]*) ;;
	*) fail "BootInform gives no sha256 for this version (does it exist?)" ;;
	esac
	dsize=$(disk_size "$disk")
	if [ "$strategy" = none ] && [ -n "$want_size" ] && [ "$want_size" != null ] &&
		[ "$want_size" -gt "$dsize" ]; then
		fail "the image ($want_size bytes) is larger than $disk ($dsize bytes)"
	fi
	log info "deploying $name ($uuid) v$version ($want_size bytes, $strategy) to $disk ($dsize bytes)"
	t0=$(now)
	sha_start "$WORK/dl.fifo" "$WORK/dl.sha"
	rm -f "$WORK/rc.dl" "$WORK/rc.decomp" "$WORK/rc.write" "$WORK/tee.pid"
	echo 0 >"$WORK/rc.decomp"
	PROGRESS_PID=""
	case "$want_size" in
	'' | *[!0-9]*) ;;
	*)
		post_progress "$uuid" 0 "$want_size"
		progress_loop "$uuid" "$want_size" &
		PROGRESS_PID=$!
		;;
	esac
	# curl -> tee (sha256 of the stored bytes on the side) -> [decompress]
	# -> dd to the disk, all streaming: nothing is held or written twice.
	set +e
	if [ "$decomp" = cat ]; then
		download_stage | tee_stage | write_stage
	else
		download_stage | tee_stage | { $decomp; echo $? >"$WORK/rc.decomp"; } | write_stage
	fi
	if [ -n "$PROGRESS_PID" ]; then
		kill "$PROGRESS_PID" 2>/dev/null
		wait "$PROGRESS_PID" 2>/dev/null
	fi
	set -e
	sha_wait "$WORK/dl.fifo"
	got_sha=$(cat "$WORK/dl.sha" 2>/dev/null || true)
	sync
	secs=$(elapsed "$t0")
	stat=$(grep '^PXEDSTAT ' "$WORK/dl.err" | tail -n 1)
	code=$(echo "$stat" | awk '{print $2}')
	got=$(echo "$stat" | awk '{print $3}')
	rc_dl=$(cat "$WORK/rc.dl" 2>/dev/null || echo "?")
	# The first failure in the pipe is the cause; the stages upstream of it
	# fail too (broken pipe, curl's 23 "write error").
	[ "$(cat "$WORK/rc.write" 2>/dev/null)" = 0 ] ||
		fail "writing $disk failed: $(grep -v -e records -e copied "$WORK/write.err" | head -n 3)"
	[ "$rc_dl" = 0 ] || [ "$rc_dl" = 23 ] ||
		fail "download failed (HTTP ${code:-?}, curl exit $rc_dl): $(grep -v '^PXEDSTAT' "$WORK/dl.err" | grep . | head -n 3)"
	if [ "$rc_dl" = 0 ] && [ "$got_sha" != "$want_sha" ]; then
		fail "sha256 mismatch: downloaded ${got:-?} bytes with sha256 $got_sha, expected $want_sha ($want_size bytes); $disk holds damaged data"
	fi
	[ "$(cat "$WORK/rc.decomp" 2>/dev/null)" = 0 ] ||
		fail "$strategy decompression failed (is the stored file really $strategy?)"
	[ "$rc_dl" = 0 ] || fail "download interrupted (curl exit $rc_dl)"
	if [ -n "$want_size" ] && [ "$want_size" != null ] && [ "$got" != "$want_size" ]; then
		fail "size mismatch: downloaded $got bytes, expected $want_size"
	fi
	written=$(awk '$2 == "bytes" && $1 ~ /^[0-9]+$/ { print $1; exit }' "$WORK/write.err")
	[ -n "$written" ] || [ "$decomp" != cat ] || written=$got
	[ -n "$written" ] || written="?"
	# All of it: pxed records the image written, with its throughput.
	[ -z "$PROGRESS_PID" ] || post_progress "$uuid" "$got" "$want_size"
	log info "deployed $uuid v$version: $written bytes in $secs s ($(rate "$written" "$secs"))$([ "$written" != "$got" ] && echo ", $got bytes downloaded ($strategy)"), sha256 verified"
	DEPLOYED="${DEPLOYED:+$DEPLOYED; }$name v$version -> $disk ($written bytes, $(rate "$written" "$secs"))"
}

DEPLOYED=""
T_START=$(now)
for i in $DEPLOY; do
	deploy "$i"
done

# --- 5. the machine image ----------------------------------------------------------

machine_image() {
	STEP="updating the machine image"
	murl=$(jget "$WORK/inform" MachineImage.URL)
	mup=$(jget "$WORK/inform" MachineImage.UploadURL)
	msha=$(jget "$WORK/inform" MachineImage.Sha256)
	msize=$(jget "$WORK/inform" MachineImage.Size)
	if [ -z "$murl" ] || [ "$murl" = null ] || [ -z "$mup" ] || [ "$mup" = null ]; then
		log warning "BootInform names no machine image: not updated"
		return 0
	fi
	# It goes to RAM (/tmp): only while it takes under half the free memory.
	avail=$(awk '/^MemAvailable:/ {print $2 * 1024}' /proc/meminfo 2>/dev/null || echo 0)
	if [ -n "$msize" ] && [ "$msize" != null ] && [ "$avail" -gt 0 ] && [ "$msize" -gt $((avail / 2)) ]; then
		log warning "machine image ($msize bytes) too large for RAM ($avail bytes available): not updated"
		return 0
	fi
	file="$WORK/machine.img"
	pcurl -o "$file" --max-time 600 "$murl" 2>"$WORK/m.err" ||
		fail "downloading the machine image failed: $(cat "$WORK/m.err")"
	got=$($SHA256 <"$file" | awk '{print $1}')
	[ -z "$msha" ] || [ "$msha" = null ] || [ "$got" = "$msha" ] ||
		fail "machine image sha256 mismatch: got $got, expected $msha"
	# Record this boot on it when it mounts (ext4 on a loop device);
	# otherwise it goes back unchanged.
	mnt="$WORK/mnt"
	mkdir -p "$mnt"
	if mount -t ext4 -o loop "$file" "$mnt" 2>"$WORK/mount.err"; then
		mkdir -p "$mnt/pxed"
		{
			echo "work=$WORK_ID"
			echo "setup=$(jget "$WORK/inform" SetupUUID)"
			echo "setup_name=$(jget "$WORK/inform" Name)"
			echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
			echo "kernel=$(uname -r)"
			echo "deployed=$DEPLOYED"
			echo "captured=$CAPTURED"
		} >"$mnt/pxed/last-boot"
		{
			echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) work=$WORK_ID setup=$(jget "$WORK/inform" SetupUUID) deployed: $DEPLOYED${CAPTURED:+; captured: $CAPTURED}"
			tail -n 999 "$mnt/pxed/history" 2>/dev/null || true
		} >"$WORK/history"
		# newest first, at most 1000 lines
		cp "$WORK/history" "$mnt/pxed/history"
		sync
		umount "$mnt" || fail "cannot unmount the machine image"
		log info "recorded this boot in the machine image (/pxed/last-boot, /pxed/history)"
	else
		log warning "cannot mount the machine image ($(cat "$WORK/mount.err")): uploading it unchanged"
	fi
	code=$(pcurl -X POST -H 'Content-Type: application/octet-stream' -H 'Expect:' \
		-T "$file" -o "$WORK/m.out" -w '%{http_code}' --max-time 600 "$mup" 2>"$WORK/m.err") ||
		fail "uploading the machine image failed (HTTP $code): $(cat "$WORK/m.err") $(head -c 300 "$WORK/m.out" 2>/dev/null)"
	log info "machine image uploaded: $(head -c 200 "$WORK/m.out")"
	rm -f "$file"
}
machine_image

# --- 6. report ---------------------------------------------------------------------

STEP="reporting"
msg="deployed $COUNT image(s) in $(elapsed "$T_START") s: $DEPLOYED"
[ -n "$CAPTURED" ] && msg="$msg; captured: $CAPTURED"
log info "$msg"
trap - EXIT
report_complete true "$msg"
after 0
