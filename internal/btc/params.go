package btc

import (
	"fmt"

	"github.com/btcsuite/btcd/chaincfg"
)

// Params returns the chain parameters of a network: "mainnet", "testnet" (testnet3),
// "signet" (the default public signet), "regtest" or "simnet".
func Params(network string) (*chaincfg.Params, error) {
	switch network {
	case "mainnet":
		return &chaincfg.MainNetParams, nil
	case "testnet":
		return &chaincfg.TestNet3Params, nil
	case "signet":
		return &chaincfg.SigNetParams, nil
	case "regtest":
		return &chaincfg.RegressionNetParams, nil
	case "simnet":
		return &chaincfg.SimNetParams, nil
	}
	return nil, fmt.Errorf("btc: unknown network %q (want mainnet, testnet, signet, regtest or simnet)", network)
}
