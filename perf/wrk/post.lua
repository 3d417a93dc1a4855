-- wrk script: POST the JSON body in $WRK_BODY (etcd's /v3/kv/range gateway read).
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
