import { z } from 'zod';
import { ContainerSpec } from '../depot/containers/drivers/driver.ts';
import { ElectionView } from '../shared/wire.ts';
import { SafeName } from '../shared/names.ts';

// What a service is, as registered once by `navigator pilot bootstrap` and handed to every
// depot that hosts a copy of it. The depot keeps it (with the pilot's durable state) next to
// the container, so a restarted depot can run the copy's pilot again.

export const ServiceName = SafeName.regex(/^[a-z0-9][a-z0-9-]{0,47}$/, 'a service name is 1-48 lower-case letters, digits or dashes')
  .describe('Name of the service, e.g. zabbix');

export const DatabaseSpec = z
  .object({
    database: z.string().regex(/^[A-Za-z0-9_]{1,64}$/).describe('Schema synced from primary to standbys'),
    user: z.string().min(1).max(80).describe('Account used by mysqldump and the loader on both sides'),
    passwordFile: z.string().max(512).default('').describe('File (in the container folder) holding the password; empty: no password'),
    port: z.number().int().min(1).max(65535).default(3306).describe('Port of the copy\'s database server on its host'),
  })
  .strict();
export type DatabaseSpec = z.infer<typeof DatabaseSpec>;

export const ServiceSpec = z
  .object({
    name: ServiceName,
    image: z.string().regex(/^[0-9a-f]{64}$/).describe('Content id of the image every copy runs'),
    container: ContainerSpec.describe('How a copy runs (driver and its spec)'),
    address: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/).describe('Service address with prefix, held by the primary'),
    iface: z.string().regex(/^[A-Za-z0-9_.:-]{1,15}$/).describe('Interface the address goes on, on every depot host'),
    port: z.number().int().min(1).max(65535).describe('TCP port the service answers on (health probe)'),
    standbys: z.number().int().min(0).max(8).default(1).describe('Standby copies kept'),
    memoryBytes: z.number().nonnegative().default(0).describe('Free memory a host needs to take a copy'),
    diskBytes: z.number().nonnegative().default(0).describe('Free disk a host needs to take a copy'),
    database: DatabaseSpec.optional().describe('The service database kept in step on standbys with mysqldump'),
  })
  .strict();
export type ServiceSpec = z.infer<typeof ServiceSpec>;
export type ServiceSpecInput = z.input<typeof ServiceSpec>;

/** What a depot keeps per hosted copy (DATADIR/pilots/<container>.json). */
export const PilotAssignment = z
  .object({
    spec: ServiceSpec,
    container: SafeName.describe('Container id of the copy (its folder and DATADIR/pilots/<container>.json)'),
    view: ElectionView,
    term: z.number().int().nonnegative().default(0),
    /** Start as candidate at once (bootstrap of the first copy). */
    campaign: z.boolean().default(false),
    seeded: z
      .boolean()
      .default(true)
      .describe("false: a standby placed to receive the service's database from the primary, not yet seeded; it does not stand for election on its own until it is (pilot/data-completeness.ts)"),
    /** A last-resort recovery (pilot/last-resort.ts): the first win is recorded as such, with the data window lost. */
    lastResort: z
      .object({
        reason: z.string().max(900).describe('What the movement record says: where it came from and the data window lost'),
        fromHost: z.string().max(253).optional().describe('Host of the last copy lost'),
      })
      .strict()
      .optional(),
  })
  .strict();
export type PilotAssignment = z.infer<typeof PilotAssignment>;
