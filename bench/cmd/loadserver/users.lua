-- wrk script: every request is GET /v1/tasks as one of 1000 users, named in
-- the X-User header, so that the limiters keep 1000 keys as they would in
-- production rather than contending on one.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/tasks", { ["X-User"] = "user-" .. math.random(1000) })
end
