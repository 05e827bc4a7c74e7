# shellcheck shell=bash
# A private Dovecot on loopback for the scripts (demo.sh, container-test.sh): sourced, not run.
# One user store, any user, password "secret", plaintext IMAP on 127.0.0.1; everything in the
# directory given. The Rust tests have their own in testkit/.

# Prints a free loopback port: a random one nothing answers on.
free_port() {
    local candidate
    for _ in $(seq 50); do
        candidate=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# Waits up to 10 s for something to listen on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Installs dovecot-imapd if it is missing.
need_dovecot() {
    if ! command -v dovecot >/dev/null 2>&1; then
        echo "installing dovecot-imapd (Debian) ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
    fi
}

# Starts Dovecot in directory $1 (created world-readable); sets dovecot_port, dovecot_pid and
# dovecot_conf (for `doveadm -c "$dovecot_conf" save -u alerts -m INBOX < mail`).
start_dovecot() {
    local dir="$1"
    mkdir -p "$dir/mail" "$dir/run" "$dir/state"
    chmod 0755 "$dir"
    chown nobody:nogroup "$dir/mail"
    dovecot_port="$(free_port)"
    dovecot_conf="$dir/dovecot.conf"
    cat > "$dovecot_conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$dir/mail/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {
  driver = static
  args = password=secret
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$dir/mail/%u
}
service imap-login {
  inet_listener imap {
    port = $dovecot_port
  }
  inet_listener imaps {
    port = 0
  }
  chroot =
}
service anvil {
  chroot =
}
CONF
    dovecot -F -c "$dovecot_conf" &
    dovecot_pid=$!
    wait_port "$dovecot_port" || { echo "Dovecot did not start" >&2; return 1; }
}

# A sample cron failure, as cron mails it.
sample_cron_mail() {
    cat <<'MAIL'
From: root@web01.example.net (Cron Daemon)
To: root@web01.example.net
Subject: Cron <root@web01> /usr/local/bin/backup.sh
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
X-Cron-Env: <SHELL=/bin/sh>
X-Cron-Env: <HOME=/root>
X-Cron-Env: <LOGNAME=root>
Message-Id: <demo-1@web01.example.net>
Date: Tue, 24 Nov 2026 03:00:01 +0000

backup.sh: error: cannot stat /srv/data: No such file or directory
MAIL
}
