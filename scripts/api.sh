# Sourced: talking to a running Tollgate's API from shell scripts (the
# benches, the SCIM conformance run).

PASSWORD="correct horse battery staple"

# json PATH: the member of the JSON on stdin at a Python subscript path,
# e.g. json '["tenant"]["id"]'.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

# sign_up API EMAIL TENANT_NAME: signs up EMAIL with a new tenant and signs
# in; sets LOGIN (the answer), TOKEN and TENANT.
sign_up() {
    curl -sf "$1/auth/signup" -H 'content-type: application/json' \
        -d "{\"email\":\"$2\",\"password\":\"$PASSWORD\",\"name\":\"Owner\",\"tenant_name\":\"$3\"}" >/dev/null
    LOGIN=$(curl -sf "$1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$2\",\"password\":\"$PASSWORD\"}")
    TOKEN=$(echo "$LOGIN" | json '["access_token"]')
    TENANT=$(echo "$LOGIN" | json '["tenant"]["id"]')
}

# scim_token API: puts the tenant (TENANT, as TOKEN, a platform
# administrator) on the enterprise plan and prints a new SCIM token.
scim_token() {
    curl -sf -X PUT "$1/tenants/$TENANT/plan" -H "authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d '{"plan":"enterprise"}' >/dev/null
    curl -sf "$1/tenants/$TENANT/scim-tokens" -H "authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d '{"name":"scim"}' | json '["secret"]'
}
