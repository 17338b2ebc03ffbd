-- wrk script: POST :encrypt with a 32-byte plaintext (the body is fixed; the server draws a
-- fresh nonce for every request).
wrk.method = "POST"
wrk.body = '{"plaintext":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYHOLD_TOKEN")
