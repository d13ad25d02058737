# lib_web.sh — sourced by http_lookup and http_instructions: a free loopback
# port, and a registryd that is up with the ten "web" instances both measure
# (the same bytes every run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# web_instances PORT: wait (up to 60 s) until registryd on PORT has a
# leader, then register web-1..web-10.
web_instances() {
    for _ in $(seq 300); do
        curl -sf "127.0.0.1:$1/v1/status/leader" | grep -q 127 && break
        sleep 0.2
    done
    for i in $(seq 1 10); do
        curl -sf -X PUT "127.0.0.1:$1/v1/agent/service/register" -d "{
          \"Name\": \"web\", \"ID\": \"web-$i\", \"Address\": \"10.0.0.$i\", \"Port\": 8080,
          \"Tags\": [\"v1\", \"zone-$((i % 3))\"], \"Meta\": {\"version\": \"1.2.$i\"}}" >/dev/null
    done
}
