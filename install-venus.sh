#!/bin/sh
# bmsbank installer for Venus OS (a GX device, or a Raspberry Pi running Venus), run as root:
#
#   sh install-venus.sh [--wheelhouse DIR] [--dry-run] [--min-free-mb N]
#   sh install-venus.sh --uninstall [--keep-config] [--dry-run]
#
# What it changes on the GX, and why each thing is where it is: docs/VENUS.md. In short:
#   /data/apps/bmsbank/           venv, config bmsbank.toml (never overwritten), service dir,
#                                 boot.sh, the kept copy of the udev rule, state files (var/)
#   /service/bmsbank              symlink to the service dir (daemontools' svscan runs it)
#   /var/log/bmsbank/             multilog's log (current) and the services' logs
#   /etc/udev/rules.d/zz-bmsbank-serial-starter.rules   serial-starter exclusion (USB ids)
#   /data/rc.local, /data/rcS.local   one marked block each, calling boot.sh
# Venus facts (victronenergy/meta-victronenergy): /service is a RAM copy rebuilt at every boot
# (meta-venus/recipes-core/initscripts/files/overlays.sh); /var/log is a link to /data/log
# (initscripts/files/volatiles); /data/rcS.local (early, before svscan starts serial-starter) and
# /data/rc.local (late) run at boot when executable (recipes-core/custom-rc.d); the rootfs with
# /etc is read-only and replaced by a firmware update, /data is kept.
#
# VENUS_ROOT=DIR (default /) puts every path above under DIR; then nothing is started, stopped,
# remounted or reloaded (tests run the installer against a Venus-like tree this way).
# VENUS_PYTHON (default /usr/bin/python3) is the Python the venv is made from.
set -eu

APP=/data/apps/bmsbank
SERVICE_LINK=/service/bmsbank
LOG_DIR=/var/log/bmsbank
RULE_NAME=zz-bmsbank-serial-starter.rules
RULE=/etc/udev/rules.d/$RULE_NAME
VERSION_FILE=/opt/victronenergy/version
REMOUNT_RW=/opt/victronenergy/swupdate-scripts/remount-rw.sh
RC_FILES="/data/rcS.local /data/rc.local"
MARK_BEGIN="# >>> bmsbank: added by install-venus.sh, removed by install-venus.sh --uninstall >>>"
MARK_END="# <<< bmsbank <<<"
# Venus v3.60 is the first on Yocto scarthgap, whose Python is 3.12; v3.55 and older are on
# dunfell's Python 3.8, and bmsbank needs 3.11 (docs/VENUS.md, with sources).
MIN_VENUS=3.60
MIN_PYTHON=3.11
MIN_FREE_MB=64

R=${VENUS_ROOT:-}
R=${R%/}
PYTHON=${VENUS_PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
cd /  # python -m puts the working directory first on sys.path: keep a stray bmsbank/ out
WHEELHOUSE=$HERE/wheelhouse
EXAMPLE=$HERE/config.example.toml
DRY=0
UNINSTALL=0
KEEP_CONFIG=0

say() { printf 'install-venus: %s\n' "$*"; }
die() { printf 'install-venus: error: %s\n' "$*" >&2; exit 1; }
live() { [ -z "$R" ]; }

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a directory"; WHEELHOUSE=$2; shift ;;
        --wheelhouse=*) WHEELHOUSE=${1#*=} ;;
        --min-free-mb) [ $# -ge 2 ] || die "--min-free-mb needs a number"; MIN_FREE_MB=$2; shift ;;
        --min-free-mb=*) MIN_FREE_MB=${1#*=} ;;
        --dry-run) DRY=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --keep-config) KEEP_CONFIG=1 ;;
        -h|--help) usage 0 ;;
        *) printf 'install-venus: unknown argument: %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done
case $MIN_FREE_MB in ''|*[!0-9]*) die "--min-free-mb: expected a whole number of MB, got '$MIN_FREE_MB'" ;; esac

# --- doing, or saying what would be done ---------------------------------------------------
act() {  # act DESCRIPTION COMMAND...: run COMMAND, or under --dry-run only say DESCRIPTION
    what=$1; shift
    if [ "$DRY" = 1 ]; then say "would $what"; else "$@"; fi
}

put() {  # put PATH MODE < CONTENT: write a file (under --dry-run: say so, write nothing)
    if [ "$DRY" = 1 ]; then
        cat >/dev/null
        say "would write $1 (mode $2)"
        return 0
    fi
    cat >"$R$1.tmp.$$"
    chmod "$2" "$R$1.tmp.$$"
    mv -f "$R$1.tmp.$$" "$R$1"
}

remount_rw() {  # the rootfs is read-only on Venus; its own helper makes it writable
    if live && [ -x "$REMOUNT_RW" ]; then act "remount / read-write" "$REMOUNT_RW"; fi
}

reload_udev() {
    if live && command -v udevadm >/dev/null 2>&1; then
        act "reload udev rules" udevadm control --reload-rules || true
    fi
}

svc_cmd() {  # svc_cmd FLAGS DIR...: daemontools' svc, on the GX only
    if live && command -v svc >/dev/null 2>&1; then
        flags=$1; shift
        act "svc $flags $*" svc "$flags" "$@" || true
    fi
}

# --- the boot hook -------------------------------------------------------------------------
block() {
    printf '%s\n' "$MARK_BEGIN"
    printf '%s\n' 'if [ -x "${VENUS_ROOT:-}/data/apps/bmsbank/boot.sh" ]; then "${VENUS_ROOT:-}/data/apps/bmsbank/boot.sh" || true; fi'
    printf '%s\n' "$MARK_END"
}

without_block() {  # the file $1 without our marked block (byte for byte otherwise)
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" '$0 == b {skip = 1; next} skip && $0 == e {skip = 0; next} !skip' "$1"
}

check_rc() {  # before anything is written: the boot hooks must be possible
    for f in $RC_FILES; do
        if [ -e "$R$f" ] && [ ! -x "$R$f" ]; then
            die "$f exists but is not executable, so Venus does not run it at boot. Make it executable (chmod +x $f) if what it holds should run, or move it away; then run this again."
        fi
        if [ -s "$R$f" ] && [ "$(tail -c 1 "$R$f" | wc -l)" -eq 0 ]; then
            die "$f does not end with a newline: add one (echo >> $f) and run this again"
        fi
    done
}

hook_rc() {  # hook_rc FILE: our block in FILE once, right after its #! line (before any exit)
    f=$1
    if [ -e "$R$f" ] && grep -qxF "$MARK_BEGIN" "$R$f"; then
        say "$f: hook already there"
        return 0
    fi
    if [ ! -e "$R$f" ]; then
        { printf '#!/bin/sh\n'; block; } | put "$f" 0755
        act "record $f as created" sh -c "echo 'created $f' >> '$R$APP/install.state'"
        return 0
    fi
    b=$(block)
    awk -v b="$b" 'NR == 1 && /^#!/ {print; print b; next} NR == 1 {print b} {print}' "$R$f" \
        | put "$f" 0755
    if [ ! -s "$R$f" ] && [ "$DRY" = 0 ]; then block | put "$f" 0755; fi
}

unhook_rc() {
    f=$1
    [ -e "$R$f" ] && grep -qxF "$MARK_BEGIN" "$R$f" || return 0
    rest=$(without_block "$R$f"; echo x)
    rest=${rest%x}
    if grep -qxF "created $f" "$R$APP/install.state" 2>/dev/null && [ "$rest" = "#!/bin/sh
" ]; then
        act "remove $f" rm -f "$R$f"
    else
        mode=$(stat -c %a "$R$f")
        printf '%s' "$rest" | put "$f" "$mode"
    fi
}

# --- checks --------------------------------------------------------------------------------
version_number() {  # "v3.60~40" -> 3060 (major * 1000 + minor)
    printf '%s\n' "$1" | sed -n 's/^v\{0,1\}\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' \
        | awk 'NF == 2 {print $1 * 1000 + $2}'
}

check_venus() {
    [ -f "$R$VERSION_FILE" ] || die "$VERSION_FILE not found: this is not Venus OS (on Debian or Raspberry Pi OS use: bmsbank install)"
    have=$(head -n 1 "$R$VERSION_FILE")
    n=$(version_number "$have")
    want=$(version_number "$MIN_VENUS")
    [ -n "$n" ] || die "$VERSION_FILE: cannot read a version from '$have'"
    if [ "$n" -lt "$want" ]; then
        die "Venus OS $have is too old: bmsbank needs v$MIN_VENUS or newer (its Python 3.12; older Venus has Python 3.8). Update: Settings > Firmware > Online updates."
    fi
    say "Venus OS $have"
}

check_python() {
    [ -x "$PYTHON" ] || die "$PYTHON not found"
    pv=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die "$PYTHON does not run"
    "$PYTHON" -c "import sys; sys.exit(sys.version_info[:2] < tuple(map(int, '$MIN_PYTHON'.split('.'))))" \
        || die "$PYTHON is Python $pv: bmsbank needs $MIN_PYTHON or newer"
    "$PYTHON" -c 'import tomllib' 2>/dev/null || die "$PYTHON has no tomllib module"
    say "Python $pv ($PYTHON)"
}

check_space() {
    free_kb=$(df -Pk "$R/data" | awk 'NR == 2 {print $4}')
    [ -n "$free_kb" ] || die "cannot read the free space of /data (df -Pk)"
    if [ "$free_kb" -lt $((MIN_FREE_MB * 1024)) ]; then
        die "/data has $((free_kb / 1024)) MB free; bmsbank needs at least $MIN_FREE_MB MB there. Free some space (old logs in /data/log, unused apps in /data) and run this again."
    fi
    say "/data: $((free_kb / 1024)) MB free"
}

check_wheelhouse() {
    [ -d "$WHEELHOUSE" ] || die "wheelhouse $WHEELHOUSE not found (give it with --wheelhouse DIR)"
    ls "$WHEELHOUSE"/bmsbank-*.whl >/dev/null 2>&1 || die "no bmsbank-*.whl in $WHEELHOUSE"
}

# --- install steps -------------------------------------------------------------------------
make_venv() {
    # A venv laid out by hand as PEP 405 defines it (pyvenv.cfg beside bin/): Venus does not
    # promise the venv module. include-system-site-packages lets pip count Venus's own
    # dbus-fast and pyserial as installed.
    v=$APP/venv
    pv=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    full=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    if [ -f "$R$v/pyvenv.cfg" ] && grep -qx "version = $full" "$R$v/pyvenv.cfg"; then
        say "venv $v (Python $full) already there"
        return 0
    fi
    act "remove the venv $v (made for another Python)" rm -rf "$R$v"
    act "create the venv $v (Python $full, system site-packages)" \
        mkdir -p "$R$v/bin" "$R$v/lib/python$pv/site-packages"
    act "link $v/bin/python3 -> $PYTHON" ln -sf "$PYTHON" "$R$v/bin/python3"
    act "link $v/bin/python -> python3" ln -sf python3 "$R$v/bin/python"
    act "link $v/lib64 -> lib" ln -sfn lib "$R$v/lib64"
    printf 'home = %s\ninclude-system-site-packages = true\nversion = %s\n' \
        "$(dirname "$PYTHON")" "$full" | put "$v/pyvenv.cfg" 0644
}

pip_install() {
    py=$R$APP/venv/bin/python
    pipwhl=$(ls "$WHEELHOUSE"/pip-*.whl 2>/dev/null | tail -n 1 || true)
    if [ -n "$pipwhl" ]; then
        set -- "$py" "$pipwhl/pip"   # pip runs from its own wheel; it is not installed
    elif [ "$DRY" = 1 ] || "$py" -m pip --version >/dev/null 2>&1; then
        set -- "$py" -m pip
    else
        die "no pip: put pip's wheel (pip-*.whl) into $WHEELHOUSE, or opkg install python3-pip"
    fi
    act "pip install bmsbank from $WHEELHOUSE (no index, no compiler)" \
        env PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "$@" install \
        --no-index --find-links "$WHEELHOUSE" --no-cache-dir --no-warn-script-location \
        --upgrade --upgrade-strategy only-if-needed --quiet bmsbank
}

install_config() {
    c=$APP/bmsbank.toml
    if [ -e "$R$c" ]; then
        say "config $c kept as it is"
        FRESH=0
        return 0
    fi
    [ -f "$EXAMPLE" ] || die "$EXAMPLE not found (it ships beside install-venus.sh)"
    # The state files go to /data: Venus's rootfs (with /var/lib) is read-only.
    sed "s|\"/var/lib/bmsbank/|\"$APP/var/|" "$EXAMPLE" | put "$c" 0644
    FRESH=1
}

write_service() {
    s=$APP/service
    act "create $s/log" mkdir -p "$R$s/log"
    put "$s/run" 0755 <<EOF
#!/bin/sh
# daemontools service of bmsbank (written by install-venus.sh): supervisord runs the pollers,
# arbiter, publisher and watchdog. Its config is rendered from $APP/bmsbank.toml at every
# start, so after editing that file: svc -t $SERVICE_LINK
exec 2>&1
echo "*** starting bmsbank ***"
mkdir -p $LOG_DIR
if ! $APP/venv/bin/bmsbank supervisor-config --python $APP/venv/bin/python \\
        --config-path $APP/bmsbank.toml $APP/bmsbank.toml > $APP/supervisord.conf.new; then
    echo "bmsbank: not started: fix $APP/bmsbank.toml (see above), then: svc -t $SERVICE_LINK"
    sleep 60
    exit 1
fi
# supervisord's own log goes to stdout, into multilog's size-bounded log beside this one.
awk '/^logfile=/ && /supervisord\\.log\$/ {print "logfile=/dev/stdout"; print "logfile_maxbytes=0"; next} {print}' \\
    $APP/supervisord.conf.new > $APP/supervisord.conf && rm -f $APP/supervisord.conf.new
# /run is a RAM disk on Venus: the runtime directory (sockets, pid) is new at every boot
rundir=\$(sed -n 's|^pidfile=\(.*\)/supervisord\.pid\$|\1|p' $APP/supervisord.conf)
[ -n "\$rundir" ] && mkdir -p "\$rundir" && chmod 0700 "\$rundir"
exec $APP/venv/bin/supervisord -n -c $APP/supervisord.conf
EOF
    # as Venus's own services log (meta-third-party/classes/daemontools.bbclass)
    put "$s/log/run" 0755 <<EOF
#!/bin/sh
exec 2>&1
exec multilog t s25000 n4 $LOG_DIR
EOF
}

write_boot() {
    put "$APP/boot.sh" 0755 <<EOF
#!/bin/sh
# bmsbank's boot hook (written by install-venus.sh), run from /data/rcS.local and /data/rc.local.
# /service is rebuilt in RAM at every boot: link the service again. A firmware update replaces
# /etc: put the serial-starter exclusion back (early, before serial-starter probes the ports).
R="\${VENUS_ROOT:-}"
APP=$APP
[ -d "\$R\$APP/service" ] || exit 0
if [ -d "\$R/service" ] && [ ! -L "\$R$SERVICE_LINK" ]; then
    ln -s \$APP/service "\$R$SERVICE_LINK"
fi
kept="\$R\$APP/udev/$RULE_NAME"
if [ -f "\$kept" ] && [ "\$(cat "\$kept")" != "\$(cat "\$R$RULE" 2>/dev/null)" ]; then
    if [ -z "\$R" ] && [ -x $REMOUNT_RW ]; then $REMOUNT_RW; fi
    cp "\$kept" "\$R$RULE"
    if [ -z "\$R" ] && command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules
        udevadm trigger --action=add --subsystem-match=tty
        udevadm settle || true
    fi
fi
exit 0
EOF
}

write_udev() {
    kept=$APP/udev/$RULE_NAME
    if [ "$FRESH" = 1 ]; then
        say "serial-starter exclusion: not yet (the config is the example); after editing $APP/bmsbank.toml run this installer again"
        return 0
    fi
    act "create $APP/udev" mkdir -p "$R$APP/udev"
    if [ "$DRY" = 1 ]; then
        say "would write $kept and $RULE (the USB ids of the config's [[ports]])"
        return 0
    fi
    "$R$APP/venv/bin/python" -m bmsbank.venus udev-rules "$R$APP/bmsbank.toml" --root "${R:-/}" \
        > "$R$kept.new" || die "could not read the ports of $APP/bmsbank.toml (see above)"
    if grep -q 'VE_SERVICE' "$R$kept.new"; then
        mv -f "$R$kept.new" "$R$kept"
        chmod 0644 "$R$kept"
        if [ "$(cat "$R$kept")" != "$(cat "$R$RULE" 2>/dev/null)" ]; then
            remount_rw
            cp "$R$kept" "$R$RULE"
            chmod 0644 "$R$RULE"
            reload_udev
        fi
        say "serial-starter ignores: $(grep -c VE_SERVICE "$R$kept") adapter(s) ($RULE); replug them or reboot"
    else
        rm -f "$R$kept.new" "$R$kept"
        if [ -e "$R$RULE" ]; then remount_rw; rm -f "$R$RULE"; reload_udev; fi
        say "serial-starter exclusion: no USB serial adapter in the config"
    fi
}

install() {
    check_venus
    check_python
    check_space
    check_wheelhouse
    check_rc
    if [ ! -d "$R/data/apps" ]; then
        act "create /data/apps" mkdir -p "$R/data/apps"
        NEW_APPS=1
    else
        NEW_APPS=0
    fi
    act "create $APP and $APP/var" mkdir -p "$R$APP/var"
    if [ "$NEW_APPS" = 1 ]; then
        act "record /data/apps as created" sh -c "echo 'created /data/apps' >> '$R$APP/install.state'"
    fi
    make_venv
    pip_install
    install_config
    write_service
    write_boot
    act "create $LOG_DIR" mkdir -p "$R$LOG_DIR"
    write_udev
    for f in $RC_FILES; do hook_rc "$f"; done
    start_service
}

start_service() {
    down=$APP/service/down
    if [ "$FRESH" = 1 ]; then
        # the example's packs are not yours: a bank of absent packs would tell the GX
        # CCL = DCL = 0 and stop your inverter; start only once the config is yours
        : | put "$down" 0644
        say "installed, not started. Edit $APP/bmsbank.toml ([[ports]], [bank]; docs/CONFIG.md), then run this installer again to start it."
    elif [ "$DRY" = 0 ] && ! "$R$APP/venv/bin/bmsbank" check-config "$R$APP/bmsbank.toml"; then
        : | put "$down" 0644
        say "installed, not started: fix $APP/bmsbank.toml (see above), then run this installer again."
    else
        act "remove $down" rm -f "$R$down"
        [ "$DRY" = 1 ] || say "config $APP/bmsbank.toml is valid"
    fi
    if [ -d "$R/service" ] && [ ! -L "$R$SERVICE_LINK" ]; then
        act "link $SERVICE_LINK -> $APP/service" ln -s "$APP/service" "$R$SERVICE_LINK"
    fi
    if [ ! -e "$R$down" ] || [ "$DRY" = 1 ]; then
        svc_cmd -u "$SERVICE_LINK/log" "$SERVICE_LINK"
        svc_cmd -t "$SERVICE_LINK"
        say "running under daemontools: svstat $SERVICE_LINK; log: tail -F $LOG_DIR/current | tai64nlocal"
    fi
}

uninstall() {
    if [ ! -d "$R$APP" ] && [ ! -L "$R$SERVICE_LINK" ]; then
        say "bmsbank is not installed ($APP not found); nothing to do"
        return 0
    fi
    svc_cmd -d "$SERVICE_LINK" "$SERVICE_LINK/log"
    [ -L "$R$SERVICE_LINK" ] && act "remove $SERVICE_LINK" rm -f "$R$SERVICE_LINK"
    svc_cmd -dx "$APP/service" "$APP/service/log"
    for f in $RC_FILES; do unhook_rc "$f"; done
    if [ -e "$R$RULE" ]; then
        remount_rw
        act "remove $RULE" rm -f "$R$RULE"
        reload_udev
    fi
    act "remove $LOG_DIR" rm -rf "$R$LOG_DIR"
    created_apps=0
    grep -qx "created /data/apps" "$R$APP/install.state" 2>/dev/null && created_apps=1
    if [ "$KEEP_CONFIG" = 1 ] && [ -f "$R$APP/bmsbank.toml" ]; then
        for p in "$R$APP"/* "$R$APP"/.[!.]*; do
            [ -e "$p" ] || [ -L "$p" ] || continue
            [ "$p" = "$R$APP/bmsbank.toml" ] || act "remove ${p#"$R"}" rm -rf "$p"
        done
        say "kept $APP/bmsbank.toml"
    else
        act "remove $APP" rm -rf "$R$APP"
        if [ "$created_apps" = 1 ]; then
            act "remove /data/apps if empty" rmdir "$R/data/apps" 2>/dev/null || true
        fi
    fi
    [ "$DRY" = 1 ] || say "uninstalled"
}

if [ "$(id -u)" != 0 ] && live; then die "run as root"; fi
FRESH=0
if [ "$UNINSTALL" = 1 ]; then uninstall; else install; fi
