#!/usr/bin/env bash
# Installs what the Python packages cannot: mysqlclient's build headers, MariaDB for
# the integration tests, and Chromium for the dashboard test. Idempotent; each step
# runs only when something is missing.
set -euo pipefail

# --build-only: just what building mysqlclient needs (for `make run`).
build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1

need=()
dpkg -s default-libmysqlclient-dev >/dev/null 2>&1 || need+=(default-libmysqlclient-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ "$build_only" = 0 ]; then
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
fi
if [ "$build_only" = 0 ] && [ "${OUTBOX_SKIP_BROWSER:-0}" != 1 ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "system-deps: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi

[ "$build_only" = 1 ] && exit 0

# MariaDB on 127.0.0.1:3306 for the integration tests (root, empty password).
if ! mariadb-admin -h127.0.0.1 -uroot status >/dev/null 2>&1; then
  echo "system-deps: starting MariaDB"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  if [ ! -d /var/lib/mysql/mysql ]; then
    $SUDO mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do
    # ping answers 0 once the server runs, even when root may not log in over TCP yet
    mariadb-admin -h127.0.0.1 --connect-timeout=2 ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
# Debian's package creates root@localhost for unix-socket login only ("invalid"
# password), which TCP clients cannot use: allow root with an empty password too.
if ! mariadb-admin -h127.0.0.1 -uroot status >/dev/null 2>&1; then
  echo "system-deps: letting root connect over TCP with an empty password (test server)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
fi
mariadb-admin -h127.0.0.1 -uroot status >/dev/null
