// Package httplimit is net/http middleware that rate limits requests with an
// allowance.Store, tells the client where it stands, and gives attempts back
// when the server, not the client, is why a request could not be served.
//
// Rules match requests by net/http ServeMux pattern syntax ("POST /v1/tasks",
// "GET /v1/", "api.example.com/"). A request is charged, in one check, for
// every rule it matches, under the identity a KeyFunc finds (the
// authenticated user, an API key header, or the client IP behind trusted
// proxies). A request that matches no rule passes through untouched.
//
// On allow the middleware sets the rate-limit headers, puts the receipt of
// the charge into the request's context and calls the handler. On deny it
// answers 429 Too Many Requests with an application/problem+json body (RFC
// 9457) and Retry-After. Every limited response carries RateLimit-Policy and
// RateLimit (draft-ietf-httpapi-ratelimit-headers-10, one item per limit) and
// X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (seconds) for
// the most restrictive limit.
//
// A handler that answers, say, 409 Conflict because the user already has a
// task running gives the attempt back with Refund(ctx, reason) before it
// writes the response, or lets the middleware do it by listing 409 in the
// rule's RefundOn. Either way the refund happens before the headers are sent,
// so they show the refunded budget. Applied(ctx) lists what was charged (the
// original design's applied_rate_limits_for_refund); ReceiptFrom(ctx) returns
// the receipt, which can be stored with a task and refunded much later with
// Middleware.RefundReceipt.
//
// When the store fails or does not answer within Config.Timeout, each rule's
// FailOpen decides: serve the request unlimited (and log and count it) or
// answer 503 Service Unavailable. Either way a charge that may have reached
// the store is voided when the request is over, so neither costs the client
// anything; voids and refunds the store could not take are retried in the
// background (SettleConfig) until it answers, and Middleware.Shutdown drains
// them.
package httplimit
