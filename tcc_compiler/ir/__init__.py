"""Graph IR: SSA values and typed op nodes, shape rules, verifier, textual form."""
