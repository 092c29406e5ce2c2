import type { PolicyConfig } from '../config-policy.ts';

// GET /api/policy: the placement policy a depot applies (config section `policy`), in force when
// its pilot is primary; read by `navigator placement` and the tracking page.
export interface PolicyResponse {
  depot: string;
  policy: PolicyConfig;
  /** The quiet window now is in (no planned moves), or null. */
  quietNow: string | null;
  /** election.preferredVoters (issue 14), shown only. */
  preferredVoters: string[];
  /** The policy in words, one line per rule. */
  explained: string[];
  /** Likely mistakes (pinned and excluded at once, ...). */
  warnings: string[];
}
