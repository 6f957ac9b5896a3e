package redisstore

import "github.com/allowancehq/allowance"

// RuleKey returns the key of identity's state of a rule, for the external
// tests.
func RuleKey(s *Store, identity, rule string, a allowance.Algorithm, limits []allowance.Limit) string {
	return ruleKey(s.identityBase(identity), rule, a, limits)
}

// AlgCode is algCode, for the external tests.
var AlgCode = algCode
