/** Step 3 (section 2): not on the deny list (403 `agent_denied`); a map lookup. */
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const denyList: CheckFactory = ({ denyList: list }) => (request) => list.check(agentOf(request));
