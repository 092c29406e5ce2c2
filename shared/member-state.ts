import { z } from 'zod';

// What a depot is in another depot's view of the cluster: alive; suspect (nothing heard, or a
// probe failed: being probed); dead (a probe round got no answer); left (it announced a clean
// stop). The transitions are in depot/membership/membership.ts.
export const MemberState = z.enum(['alive', 'suspect', 'dead', 'left']);
export type MemberState = z.infer<typeof MemberState>;
