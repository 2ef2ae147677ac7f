-- wrk script: POST one small non-streamed chat completion.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-sy-master-bench-0123456789abcdefghij"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'
