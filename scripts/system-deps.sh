#!/usr/bin/env bash
# Installs what the Python packages cannot, each step only when something is missing:
# - mysqlclient's build headers (also for `make run`: --build-only);
# - MariaDB, started on 127.0.0.1:3306 (root, empty password) for the tests;
# - Java 17 and Maven, and Apache Kafka's jars resolved from Maven Central by Maven
#   (outbox_app/devtools/kafka/pom.xml) into ~/.cache/outbox-app: the suite's broker;
# - kcat (a librdkafka client the interoperability test reads the topics with);
# - Chromium and its driver for the dashboard test (OUTBOX_SKIP_BROWSER=1 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need=()
dpkg -s default-libmysqlclient-dev >/dev/null 2>&1 || need+=(default-libmysqlclient-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ "$build_only" = 0 ]; then
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  command -v kcat >/dev/null 2>&1 || need+=(kcat)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  if [ "${OUTBOX_SKIP_BROWSER:-0}" != 1 ]; then
    [ -x /usr/bin/chromium ] || need+=(chromium)
    [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "system-deps: installing ${need[*]}"
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    "${need[@]}" >/dev/null
fi

[ "$build_only" = 1 ] && exit 0

# MariaDB on 127.0.0.1:3306 for the integration tests (root, empty password).
if ! mariadb-admin -h127.0.0.1 -uroot status >/dev/null 2>&1; then
  echo "system-deps: starting MariaDB"
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
  $SUDO mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
fi
mariadb-admin -h127.0.0.1 -uroot status >/dev/null

# Apache Kafka's jars, resolved once per version (what outbox_app/devtools/kafka/jars.py
# does on first use; done here so that the first test does not wait for Maven).
pom=outbox_app/devtools/kafka/pom.xml
version=$(grep -A1 '<artifactId>kafka_2.13</artifactId>' "$pom" | sed -n 's:.*<version>\(.*\)</version>.*:\1:p')
libs="${OUTBOX_KAFKA_CACHE:-$HOME/.cache/outbox-app/kafka-$version}/libs"
digest=$(sha256sum "$pom" | cut -d' ' -f1)
if [ "$(cat "$libs/.resolved" 2>/dev/null)" != "$digest" ]; then
  echo "system-deps: resolving Apache Kafka $version with Maven into $libs"
  rm -rf "$libs"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs" -DincludeScope=runtime
  test -f "$libs/kafka_2.13-$version.jar"
  echo "$digest" > "$libs/.resolved"
fi
