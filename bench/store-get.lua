-- wrk script: GET ?alt=media of one object (the URL given to wrk) with the owner's token.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYHOLD_TOKEN")
