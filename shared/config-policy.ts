import { z } from 'zod';

// Config section `policy`: what the admin wants of placement, written down instead of being
// constants in the code. The primary's depot applies its own copy (keep the section the same on
// every depot); `navigator config check` explains it and `navigator placement` and the page show it.

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

/** A quiet window: days (0 = Sunday) and minutes of the day [from, to); `to` < `from` runs past midnight. */
export interface QuietWindow {
  text: string;
  days: number[];
  fromMin: number;
  toMin: number;
}

const WINDOW_RE = /^(?:([a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+)?([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$/;

/** "22:00-06:00", "mon-fri 12:00-13:30", "sat,sun 00:00-24:00"; throws a readable Error. */
export function parseQuietWindow(text: string): QuietWindow {
  const m = WINDOW_RE.exec(text.trim().toLowerCase());
  if (!m) throw new Error(`"${text}" is not a quiet window (examples: "22:00-06:00", "mon-fri 12:00-13:30", "sat,sun 00:00-24:00")`);
  const day = (d: string) => {
    const i = DAYS.indexOf(d as (typeof DAYS)[number]);
    if (i < 0) throw new Error(`"${d}" in "${text}" is not a day (${DAYS.join(', ')})`);
    return i;
  };
  let days = [0, 1, 2, 3, 4, 5, 6];
  if (m[1]) {
    const set = new Set<number>();
    for (const part of m[1].split(',')) {
      const [a, b] = part.split('-');
      const from = day(a!);
      const to = b ? day(b) : from;
      for (let d = from; ; d = (d + 1) % 7) {
        set.add(d);
        if (d === to) break;
      }
    }
    days = [...set].sort((a, b) => a - b);
  }
  const fromMin = Number(m[2]) * 60 + Number(m[3]);
  const toMin = Number(m[4]) * 60 + Number(m[5]);
  if (toMin > 24 * 60) throw new Error(`"${text}": the end is after 24:00`);
  if (fromMin === toMin) throw new Error(`"${text}": the window is empty`);
  return { text, days, fromMin, toMin };
}

const HostName = z.string().min(1).max(253);

export const FACTOR_NAMES = ['uptime', 'memory', 'cpu', 'session', 'image'] as const;

const weight = (what: string) => z.number().min(0).max(100).optional().describe(what);

export const ServicePolicy = z
  .object({
    standbys: z.number().int().min(0).max(8).optional().describe('Standby copies kept (overrides the number given at bootstrap)'),
    pinned: z.array(HostName).default([]).describe('Depots preferred for copies of this service: ranked first whenever eligible'),
    excluded: z.array(HostName).default([]).describe('Depots that never get a copy of this service'),
    recovery: z
      .object({
        startWithoutData: z
          .boolean()
          .default(false)
          .describe('When every copy is lost and no live depot holds a copy of the database, start the service from its pristine image anyway (empty database; alerted as such). Default: stay down and alert'),
      })
      .strict()
      .default({ startWithoutData: false })
      .describe('Last-resort recovery of this service (config section recovery)'),
  })
  .strict();
export type ServicePolicy = z.infer<typeof ServicePolicy>;

export const PolicySection = z
  .object({
    weights: z
      .object({
        uptime: weight('Weight of host uptime'),
        memory: weight('Weight of memory left after the copy starts'),
        cpu: weight('Weight of idle CPU share'),
        session: weight("Weight of the host's expected remaining session (its past sessions at this time of day)"),
        image: weight('Weight of the image being staged on the host already'),
      })
      .strict()
      .default({})
      .describe('Placement weights (each 0..100, relative to each other); left out: the built-in weight (uptime 0.2, memory 0.2, cpu 0.2, session 0.25, image 0.15)'),
    excludedHosts: z.array(HostName).default([]).describe('Depots that never get a copy of any service (they still vote and serve the page)'),
    groups: z
      .record(HostName, z.string().min(1).max(64))
      .default({})
      .describe('Anti-affinity: depot name -> group (power strip, switch, room). A standby never goes into the primary\'s group, and shares a group with another standby only when no other host is left'),
    quietHours: z
      .array(z.string().max(64))
      .default([])
      .superRefine((list, ctx) => {
        for (const [i, text] of list.entries()) {
          try {
            parseQuietWindow(text);
          } catch (err) {
            ctx.addIssue({ code: 'custom', path: [i], message: (err as Error).message });
          }
        }
      })
      .describe('Local-time windows with no planned moves (e.g. "22:00-06:00", "mon-fri 12:00-13:30"): Navigator moves nothing on its own then (anti-affinity repair, surplus standbys); replacing a lost copy and pre-staging go on'),
    services: z
      .record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,47}$/, 'a service name is 1-48 lower-case letters, digits or dashes'), ServicePolicy)
      .default({})
      .describe('Per service: standbys, pinned and excluded depots, e.g. {zabbix: {standbys: 2, pinned: [ws3], excluded: [teacher]}}'),
  })
  .strict();
export type PolicyConfig = z.infer<typeof PolicySection>;
