# Sourced: a throwaway PostgreSQL cluster for tests and benches (a temp
# dir, a free loopback port, stopped on exit), with `tollgate`, the
# application's own role (not a superuser, so row-level security binds it).
# After `start_postgres BIN`: PG_PORT, PG_BIN, PG_DIR, and the URLs
# TOLLGATE_TEST_DATABASE_URL and TOLLGATE_TEST_SUPERUSER_URL are set.

find_pg_bin() {
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ]; then
            echo "$dir"
            return
        fi
    done
}

start_postgres() {
    local bin="$1" run_as="" port dir
    dir="$(mktemp -d /tmp/tollgate-pg.XXXXXX)"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if [ "$(id -u)" = "0" ]; then
        # PostgreSQL refuses to run as root.
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --no-create-home postgres
        fi
        run_as="postgres"
        chown postgres "$dir"
    fi
    as_pg() { if [ -n "$run_as" ]; then runuser -u "$run_as" -- "$@"; else "$@"; fi; }
    echo "tollgate-superuser-pw" > "$dir/pw"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/pw" >"$dir/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null
    PG_DIR="$dir"
    PG_BIN="$bin"
    PG_PORT="$port"
    PG_RUN_AS="$run_as"
    trap stop_postgres EXIT
    PGPASSWORD=tollgate-superuser-pw "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE tollgate LOGIN CREATEDB PASSWORD 'tollgate'"
    # The application's own role: not a superuser, so row-level security binds it.
    export TOLLGATE_TEST_DATABASE_URL="postgres://tollgate:tollgate@127.0.0.1:$port/postgres"
    # A superuser, only to check that the store refuses to run as one.
    export TOLLGATE_TEST_SUPERUSER_URL="postgres://postgres:tollgate-superuser-pw@127.0.0.1:$port/postgres"
    echo "PostgreSQL test cluster on 127.0.0.1:$port"
}

stop_postgres() {
    if [ -n "${PG_DIR:-}" ]; then
        if [ -n "$PG_RUN_AS" ]; then
            runuser -u "$PG_RUN_AS" -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        else
            "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_DIR"
    fi
}
