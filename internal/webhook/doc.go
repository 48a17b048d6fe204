// Package webhook delivers the replicated event log to the admin's webhooks, on the
// leader only, with Standard Webhooks signatures, from a replicated cursor: each webhook's
// Through moves only by the leader's report after the receiver answered 2xx (or the event
// was not subscribed), so a new leader goes on where the old one stopped — duplicates
// possible, losses not.
//
// It must never decide what an event is, nor deliver anything the replicated state does
// not hold: it reads events and webhooks through State and reports through Reporter, the
// small interfaces it owns, and knows nothing of HTTP handlers or raft beyond them.
//
// The webhook secrets are in the state only sealed under the cluster's webhook key
// (Keyring); they are opened on the leader to sign a delivery, and never logged, nor is a
// signature or a body. The outbound client (NewHTTPClient) refuses, at connect time,
// every address a node must not reach (Guard), follows no redirect and reads little of an
// answer.
package webhook
