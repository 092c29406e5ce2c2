#!/usr/bin/env node
// Writes deploy/zabbix/navigator-template.yaml: the Zabbix 6.0 template "Navigator by HTTP" (YAML
// export format) that watches Navigator through a depot's /metrics and /api/services. Generated so
// that every item, trigger, graph and dashboard widget refers to keys that exist; run it again after
// changing it: `node scripts/zabbix-template.mjs`. UUIDs are derived from names (stable across runs).
import { createHash } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';

const TEMPLATE = 'Navigator by HTTP';
const GROUP = 'Templates/Applications';
const out = join(dirname(new URL(import.meta.url).pathname), '..', 'deploy', 'zabbix', 'navigator-template.yaml');

/** A UUIDv4-shaped id from a name (Zabbix wants 32 hex digits, version 4). */
function uuid(name) {
  const h = createHash('md5').update(`navigator-zabbix:${name}`).digest('hex').split('');
  h[12] = '4';
  h[16] = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  return h.join('');
}

const tag = (component) => [{ tag: 'component', value: component }];
const prom = (pattern, fn) => ({ type: 'PROMETHEUS_PATTERN', parameters: fn ? [pattern, 'function', fn] : [pattern, 'value', ''] });
/** A metric that is absent until it first happens (a counter with labels) reads as 0. */
const orZero = (step) => ({ ...step, error_handler: 'CUSTOM_VALUE', error_handler_params: '0' });
const T = (key) => `/${TEMPLATE}/${key}`;

const master = (key, name, path, description) => ({
  uuid: uuid(`item:${key}`),
  name,
  type: 'HTTP_AGENT',
  key,
  delay: '{$NAVIGATOR.INTERVAL}',
  history: '0',
  trends: '0',
  value_type: 'TEXT',
  description,
  timeout: '{$NAVIGATOR.TIMEOUT}',
  url: `{$NAVIGATOR.SCHEME}://{HOST.CONN}:{$NAVIGATOR.PORT}${path}`,
  tags: tag('raw'),
});

const dep = (key, name, { master: m = 'navigator.metrics', steps, value_type = 'UNSIGNED', units = '', description = '', component = 'navigator', triggers } = {}) => ({
  uuid: uuid(`item:${key}`),
  name,
  type: 'DEPENDENT',
  key,
  delay: '0',
  ...(value_type !== 'UNSIGNED' ? { value_type } : {}),
  ...(value_type === 'TEXT' || value_type === 'CHAR' ? { trends: '0' } : {}),
  ...(units ? { units } : {}),
  description,
  preprocessing: steps,
  master_item: { key: m },
  tags: tag(component),
  ...(triggers ? { triggers } : {}),
});

const trigger = (name, expression, priority, description, extra = {}) => ({ uuid: uuid(`trigger:${name}`), expression, name, priority, description, ...extra });

const items = [
  master('navigator.metrics', 'Navigator: get /metrics', '/metrics', 'Prometheus metrics of the depot (every other item is taken from this one or from /api/services).'),
  master('navigator.api.services', 'Navigator: get /api/services', '/api/services', 'Where each copy of each service is now (JSON).'),
  ...['alive', 'suspect', 'dead', 'left'].map((state) =>
    dep(`navigator.members[${state}]`, `Navigator: depots ${state}`, {
      steps: [orZero(prom(`navigator_members{state="${state}"}`))],
      description: `Depots in state ${state} in this depot's membership view.`,
      component: 'depots',
      ...(state === 'dead'
        ? { triggers: [trigger('Navigator: a depot is dead', `last(${T('navigator.members[dead]')})>0`, 'WARNING', 'A depot stopped answering (power loss, crash or network cut); its copies are replaced.')] }
        : state === 'alive'
          ? { triggers: [trigger('Navigator: no data from the depot for {$NAVIGATOR.NODATA}', `nodata(${T('navigator.members[alive]')},{$NAVIGATOR.NODATA})=1`, 'HIGH', 'The depot this host points at does not answer on /metrics.')] }
          : {}),
    }),
  ),
  dep('navigator.peers', 'Navigator: peers connected', { steps: [prom('navigator_peers_connected')], component: 'depots', description: 'libp2p peers this depot has a connection to.' }),
  dep('navigator.failovers', 'Navigator: failovers (all services)', {
    steps: [orZero(prom('navigator_failovers_total', 'sum'))],
    description: 'Failovers seen in the movement journal since the depot started.',
    component: 'services',
  }),
  dep('navigator.alerts.open', 'Navigator: alerts open', { steps: [orZero(prom('navigator_alerts_open', 'sum'))], component: 'alerts', description: 'Open alerts of the cluster (the alert table every depot keeps).' }),
  dep('navigator.alerts.critical', 'Navigator: critical alerts open', { steps: [orZero(prom('navigator_alerts_open{severity="critical"}', 'sum'))], component: 'alerts' }),
  dep('navigator.alerts.sender', 'Navigator: this depot sends the alerts', { steps: [orZero(prom('navigator_alert_sender'))], component: 'alerts', description: '1 on the depot that sends the cluster\'s alert messages.' }),
  dep('navigator.alerts.delivery_failures', 'Navigator: alert delivery failures in a row', {
    steps: [orZero(prom('navigator_alert_delivery_failures', 'max'))],
    component: 'alerts',
    description: 'Failed deliveries in a row of the worst alert channel of this depot (only the sending depot delivers).',
    triggers: [trigger('Navigator: alert messages cannot be delivered', `min(${T('navigator.alerts.delivery_failures')},5m)>={$NAVIGATOR.DELIVERY.FAILURES.MAX}`, 'AVERAGE', 'The webhook or the mail server refuses or does not answer; see /api/alerts on the depot.')],
  }),
  dep('navigator.notices[peer-refused]', 'Navigator: refused peers (security events)', {
    steps: [orZero(prom('navigator_notices_total{kind="peer-refused"}'))],
    component: 'security',
    description: 'Requests or messages from a swarm member that were refused (forged gossip, methods its role does not allow).',
    triggers: [trigger('Navigator: a peer was refused (security event)', `change(${T('navigator.notices[peer-refused]')})>0`, 'HIGH', 'A depot holding the swarm key sent something its role does not allow. Check the host named in the alert.', { manual_close: 'YES' })],
  }),
  dep('navigator.notices[image-verify-failed]', 'Navigator: images that failed verification', {
    steps: [orZero(prom('navigator_notices_total{kind="image-verify-failed"}'))],
    component: 'images',
    triggers: [trigger('Navigator: an image failed verification', `change(${T('navigator.notices[image-verify-failed]')})>0`, 'AVERAGE', 'A stored image is damaged (quarantined) or a received one had bad blocks.', { manual_close: 'YES' })],
  }),
  dep('navigator.gossip.spoofed', 'Navigator: forged gossip messages dropped', { steps: [orZero(prom('navigator_gossip_dropped_total{reason="spoofed"}'))], component: 'security' }),
];

const S = '{#SERVICE}';
const svcKey = (k) => `navigator.service.${k}[${S}]`;
const servicesJs = (body) => `var s = JSON.parse(value).services.filter(function (x) { return x.service === '${S}'; })[0];\nif (!s) { return ''; }\n${body}`;

const itemPrototypes = [
  dep(svcKey('primary'), `Navigator ${S}: has a running primary`, { steps: [orZero(prom(`navigator_service_primary{service="${S}"}`))], component: 'services' }),
  dep(svcKey('standbys'), `Navigator ${S}: running standbys`, { steps: [orZero(prom(`navigator_service_standbys{service="${S}"}`))], component: 'services' }),
  dep(svcKey('term'), `Navigator ${S}: election term`, { steps: [orZero(prom(`navigator_service_term{service="${S}"}`))], component: 'services' }),
  dep(svcKey('down'), `Navigator ${S}: time without a primary`, { steps: [orZero(prom(`navigator_service_down_seconds{service="${S}"}`))], value_type: 'FLOAT', units: 's', component: 'services' }),
  dep(svcKey('unprotected'), `Navigator ${S}: time without a standby`, { steps: [orZero(prom(`navigator_service_unprotected_seconds{service="${S}"}`))], value_type: 'FLOAT', units: 's', component: 'services' }),
  dep(svcKey('rpo'), `Navigator ${S}: RPO (oldest standby database copy)`, { steps: [orZero(prom(`navigator_sync_age_seconds{service="${S}"}`, 'max'))], value_type: 'FLOAT', units: 's', component: 'services' }),
  dep(svcKey('sync_failing'), `Navigator ${S}: standbys whose database copy fails`, { steps: [orZero(prom(`navigator_sync_failing{service="${S}"}`, 'sum'))], component: 'services' }),
  dep(svcKey('quorum_lost'), `Navigator ${S}: voter quorum lost`, { steps: [orZero(prom(`navigator_quorum_lost{service="${S}"}`))], component: 'services' }),
  dep(svcKey('failovers'), `Navigator ${S}: failovers`, { steps: [orZero(prom(`navigator_failovers_total{service="${S}"}`))], component: 'services' }),
  dep(svcKey('copies'), `Navigator ${S}: copies and roles`, {
    master: 'navigator.api.services',
    value_type: 'CHAR',
    component: 'services',
    description: 'host:role:state of every copy.',
    steps: [{ type: 'JAVASCRIPT', parameters: [servicesJs("return s.copies.map(function (c) { return c.host + ':' + c.role + ':' + c.state; }).join(', ');")] }, { type: 'DISCARD_UNCHANGED_HEARTBEAT', parameters: ['1h'] }],
  }),
  dep(svcKey('primary_host'), `Navigator ${S}: primary host`, {
    master: 'navigator.api.services',
    value_type: 'CHAR',
    component: 'services',
    steps: [{ type: 'JAVASCRIPT', parameters: [servicesJs("var p = s.copies.filter(function (c) { return c.role === 'primary'; })[0];\nreturn p ? p.host : '';")] }, { type: 'DISCARD_UNCHANGED_HEARTBEAT', parameters: ['1h'] }],
  }),
];

const triggerPrototypes = [
  trigger(`Navigator ${S}: no primary for more than {$NAVIGATOR.DOWN.MAX}s`, `last(${T(svcKey('down'))})>{$NAVIGATOR.DOWN.MAX}`, 'DISASTER', 'No copy of the service runs as primary: the service is down.'),
  trigger(`Navigator ${S}: no standby for more than {$NAVIGATOR.UNPROTECTED.MAX}s`, `last(${T(svcKey('unprotected'))})>{$NAVIGATOR.UNPROTECTED.MAX}`, 'HIGH', 'The primary runs alone: the next failure of its host is an outage.'),
  trigger(`Navigator ${S}: standby database copy older than {$NAVIGATOR.RPO.MAX}s`, `last(${T(svcKey('rpo'))})>{$NAVIGATOR.RPO.MAX}`, 'WARNING', 'A failover now would lose this much data.'),
  trigger(`Navigator ${S}: database copy to a standby failing`, `min(${T(svcKey('sync_failing'))},{$NAVIGATOR.SYNC.FAILING.PERIOD})>0`, 'AVERAGE', 'The primary cannot copy its database to a standby.'),
  trigger(`Navigator ${S}: voter quorum lost`, `last(${T(svcKey('quorum_lost'))})=1`, 'DISASTER', 'Too few voters are alive: no primary can be elected or renew its lease.'),
  trigger(`Navigator ${S}: failover`, `change(${T(svcKey('failovers'))})>0`, 'HIGH', 'The primary was lost and a standby took over (see navigator history).', { manual_close: 'YES' }),
];

const graphItem = (key, color, sortorder = 0) => ({ sortorder: String(sortorder), color, item: { host: TEMPLATE, key } });
const graphs = [
  { uuid: uuid('graph:depots'), name: 'Navigator: depots', graph_items: [graphItem('navigator.members[alive]', '1A7C11', 0), graphItem('navigator.members[suspect]', 'F7941D', 1), graphItem('navigator.members[dead]', 'FC6EA3', 2)] },
  { uuid: uuid('graph:alerts'), name: 'Navigator: alerts', graph_items: [graphItem('navigator.alerts.open', 'F63100', 0), graphItem('navigator.alerts.critical', '2774A4', 1), graphItem('navigator.failovers', 'A54F10', 2)] },
];
const graphPrototypes = [
  { uuid: uuid('graphp:copies'), name: `Navigator ${S}: copies`, graph_items: [graphItem(svcKey('primary'), '1A7C11', 0), graphItem(svcKey('standbys'), '2774A4', 1)] },
  { uuid: uuid('graphp:times'), name: `Navigator ${S}: RPO and unprotected time`, graph_items: [graphItem(svcKey('rpo'), 'F63100', 0), graphItem(svcKey('unprotected'), 'A54F10', 1), graphItem(svcKey('down'), 'FC6EA3', 2)] },
];

const widget = (type, name, x, y, width, height, fields) => ({ type, name, x: String(x), y: String(y), width: String(width), height: String(height), fields });
const dashboards = [
  {
    uuid: uuid('dashboard:navigator'),
    name: 'Navigator',
    pages: [
      {
        name: 'Cluster',
        widgets: [
          widget('ITEM', 'Depots alive', 0, 0, 4, 3, [{ type: 'ITEM', name: 'itemid', value: { host: TEMPLATE, key: 'navigator.members[alive]' } }]),
          widget('ITEM', 'Alerts open', 4, 0, 4, 3, [{ type: 'ITEM', name: 'itemid', value: { host: TEMPLATE, key: 'navigator.alerts.open' } }]),
          widget('ITEM', 'Failovers', 8, 0, 4, 3, [{ type: 'ITEM', name: 'itemid', value: { host: TEMPLATE, key: 'navigator.failovers' } }]),
          widget('GRAPH_CLASSIC', 'Depots', 12, 0, 12, 5, [
            { type: 'INTEGER', name: 'source_type', value: '0' },
            { type: 'GRAPH', name: 'graphid', value: { host: TEMPLATE, name: 'Navigator: depots' } },
          ]),
          widget('GRAPH_CLASSIC', 'Alerts and failovers', 0, 5, 12, 5, [
            { type: 'INTEGER', name: 'source_type', value: '0' },
            { type: 'GRAPH', name: 'graphid', value: { host: TEMPLATE, name: 'Navigator: alerts' } },
          ]),
          widget('GRAPH_PROTOTYPE', 'Copies of each service', 12, 5, 12, 5, [
            { type: 'INTEGER', name: 'source_type', value: '2' },
            { type: 'GRAPH_PROTOTYPE', name: 'graphid', value: { host: TEMPLATE, name: `Navigator ${S}: copies` } },
            { type: 'INTEGER', name: 'columns', value: '1' },
          ]),
          widget('GRAPH_PROTOTYPE', 'RPO and unprotected time of each service', 0, 10, 24, 5, [
            { type: 'INTEGER', name: 'source_type', value: '2' },
            { type: 'GRAPH_PROTOTYPE', name: 'graphid', value: { host: TEMPLATE, name: `Navigator ${S}: RPO and unprotected time` } },
            { type: 'INTEGER', name: 'columns', value: '1' },
          ]),
        ],
      },
    ],
  },
];

const macro = (name, value, description) => ({ macro: `{$NAVIGATOR.${name}}`, value, description });
const template = {
  uuid: uuid('template'),
  template: TEMPLATE,
  name: TEMPLATE,
  description:
    'Watches a Navigator cluster through one depot (any depot sees the whole cluster): depots, copies and roles, RPO, failovers, unprotected time, alerts and security events. Link it to a host whose interface address is a depot (or the service address, which always reaches the primary\'s depot) and set {$NAVIGATOR.PORT} if the depot does not serve HTTP on 7480. See the README, section "Watching Navigator with Zabbix".',
  groups: [{ name: GROUP }],
  items,
  discovery_rules: [
    {
      uuid: uuid('lld:services'),
      name: 'Navigator: services',
      type: 'DEPENDENT',
      key: 'navigator.services.discovery',
      delay: '0',
      description: 'One set of items and triggers per service in /api/services.',
      item_prototypes: itemPrototypes,
      trigger_prototypes: triggerPrototypes,
      graph_prototypes: graphPrototypes,
      master_item: { key: 'navigator.api.services' },
      lld_macro_paths: [{ lld_macro: S, path: '$.service' }],
      preprocessing: [{ type: 'JSONPATH', parameters: ['$.services'] }],
      lifetime: '7d',
    },
  ],
  tags: [{ tag: 'class', value: 'application' }, { tag: 'target', value: 'navigator' }],
  macros: [
    macro('SCHEME', 'http', 'http or https'),
    macro('PORT', '7480', "The depot's HTTP port (config http.port)"),
    macro('INTERVAL', '30s', 'How often /metrics and /api/services are read'),
    macro('TIMEOUT', '5s', 'HTTP timeout of those reads'),
    macro('NODATA', '5m', 'No answer from the depot this long raises a trigger'),
    macro('DOWN.MAX', '10', 'Seconds without a running primary before the trigger fires'),
    macro('UNPROTECTED.MAX', '120', 'Seconds without a running standby before the trigger fires'),
    macro('RPO.MAX', '600', 'Largest acceptable age (s) of a standby\'s database copy'),
    macro('SYNC.FAILING.PERIOD', '5m', 'How long a database copy must keep failing before the trigger fires'),
    macro('DELIVERY.FAILURES.MAX', '3', 'Failed alert deliveries in a row (for 5 minutes) before the trigger fires'),
  ],
  dashboards,
};

const doc = {
  zabbix_export: {
    version: '6.0',
    groups: [{ uuid: uuid(`group:${GROUP}`), name: GROUP }],
    templates: [template],
    graphs,
  },
};

// Discovery rule graph prototypes reference the template host too.
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `# Generated by scripts/zabbix-template.mjs: edit that file and run it again.\n${stringify(doc, { lineWidth: 0 })}`);
process.stdout.write(`wrote ${out}\n`);
