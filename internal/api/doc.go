// Package api is the one definition of custos's HTTP wire API (API.md): the Go types of
// every JSON body the nodes answer with (and of the bodies the SDKs send), the request,
// key and user statuses with Final, and the stable error codes with their one table of
// HTTP status and title (StatusOf, Title). The server marshals these types and both SDKs
// (node/client and admin) decode them, so that a field, a status or a code has exactly
// one spelling.
//
// It owns names and shapes only. It must never hold logic beyond codes and types (no
// validation, no I/O, no state), and it imports nothing of custos: every other package
// may import it, and it may import none of them.
package api
