'use strict';
/**
 * One call, in the seed's shape: the token, the profile, a Call Control
 * WebSocket (the ws package), the menu built from the profile's attributes,
 * one play per menu item, the key, the confirmation, the transfer.
 *
 * What differs from the seed (its bugs, fixed):
 * - the profile lookup and the WebSocket start together (the seed awaited
 *   the profile first; ivrproto and floor.py do both at once, so first-play
 *   latencies compare like with like), and the menu is played once both
 *   the menu and "connected" are there;
 * - a profile that fails, or takes longer than the budget, gives the
 *   default menu (the seed's complete example had no default menu and
 *   exited the whole process on any error);
 * - the handshake timer is cleared on "connected" (the seed's closed every
 *   connection 10 s after it opened, connected or not) and rejects once;
 * - a frame is parsed once, in one listener, inside try/catch (the seed
 *   parsed each twice and a bad frame threw out of the handler);
 * - after a choice, further keys are ignored (the seed scheduled one more
 *   transfer per key); a send only happens on an open socket;
 * - a 401 on the upgrade drops the token and tries once more;
 * - permessage-deflate is off (the ws package offers it by default;
 *   ivrproto's Autobahn client does not), so both speak the same frames;
 * - the caller id is never logged.
 */

const WebSocket = require('ws');

const AUDIO_BASE_URL = 'https://example.com/ivr/audio/';
const HANDSHAKE_TIMEOUT_MS = 10000;
const CAPABILITIES = ['play', 'dtmf', 'transfer', 'hangup'];

const DEFAULT_MENU = [
  { key: '1', prompt: 'general_welcome.mp3', action: 'transfer_sales' },
  { key: '2', prompt: 'general_support.mp3', action: 'transfer_support' },
  { key: '0', prompt: 'general_operator.mp3', action: 'transfer_operator' },
];

/** The seed's buildDynamicMenu, with its default menu for no profile. */
function buildDynamicMenu(profile) {
  if (!profile) return DEFAULT_MENU;
  const attributes = profile.attributes || {};
  const menu = [];
  if (attributes.membership_level === 'premium') {
    menu.push({ key: '1', prompt: 'premium_priority.mp3', action: 'transfer_premium' });
  }
  const tickets = attributes.open_tickets;
  if (typeof tickets === 'number' && tickets > 0) {
    menu.push({ key: '2', prompt: 'ticket_status.mp3', action: 'play_ticket_info' });
  }
  menu.push({ key: '0', prompt: 'general_operator.mp3', action: 'transfer_operator' });
  return menu;
}

class Call {
  /**
   * @param {object} service what calls share: platform, options, stats, log, ended(call)
   * @param {string} callControlId
   * @param {string} externalId
   */
  constructor(service, callControlId, externalId) {
    this.service = service;
    this.id = callControlId;
    this.externalId = externalId;
    this.ws = null;
    this.menu = null;
    this.keys = null;
    this.connected = false;
    this.chosen = false;
    this.done = false;
    this.upgradeRetried = false;
    this.timers = [];
    this.outcome = 'closed';
  }

  start() {
    const { platform } = this.service;
    platform.getAccessToken().then((token) => {
      this.lookUp(token);
      this.connect(token);
    }, () => this.finish('failed (no token)'));
  }

  lookUp(token) {
    const { platform, options, stats } = this.service;
    stats.profiles.lookups.lookups++;
    let settled = false;
    const budget = setTimeout(() => {
      if (settled) return;
      settled = true;
      stats.profiles.lookups.timed_out++;
      stats.fallbacks.default_menu++;
      this.setMenu(null);
    }, options.profileBudgetMs);
    platform.fetchUserProfile(this.externalId, token).then((profile) => {
      if (settled) return;
      settled = true;
      clearTimeout(budget);
      stats.profiles.lookups[profile ? 'found' : 'not_found']++;
      this.service.log(`Profile loaded: ${profile ? 'Found' : 'Not found'}`);
      this.setMenu(profile);
    }, () => {
      if (settled) return;
      settled = true;
      clearTimeout(budget);
      stats.profiles.lookups.failed++;
      stats.fallbacks.default_menu++;
      this.setMenu(null);
    });
  }

  setMenu(profile) {
    this.menu = buildDynamicMenu(profile);
    this.keys = this.menu.map((m) => m.key);
    this.maybePlay();
  }

  connect(token) {
    const ws = new WebSocket(this.service.platform.wsUrl, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      perMessageDeflate: false,
    });
    this.ws = ws;
    const handshake = setTimeout(() => {
      if (!this.connected) {
        this.outcome = 'failed (handshake timed out)';
        ws.terminate();
      }
    }, HANDSHAKE_TIMEOUT_MS);
    this.timers.push(handshake);
    ws.on('open', () => {
      this.send({ callControlId: this.id, media: 'audio', capabilities: CAPABILITIES });
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let message;
      try {
        message = JSON.parse(data.toString());
      } catch (error) {
        return;
      }
      if (message && typeof message === 'object') this.onEvent(message, handshake);
    });
    ws.on('unexpected-response', (req, res) => {
      res.resume();
      if (res.statusCode === 401 && !this.upgradeRetried) {
        this.upgradeRetried = true;
        clearTimeout(handshake);
        ws.removeAllListeners('close');
        ws.on('error', () => {});
        ws.terminate();
        this.service.platform.invalidate(token);
        this.service.platform.getAccessToken().then(
          (fresh) => this.connect(fresh), () => this.finish('failed (no token)'));
        return;
      }
      this.outcome = `failed (upgrade refused (HTTP ${res.statusCode}))`;
      ws.terminate();
    });
    ws.on('error', () => {
      if (this.outcome === 'closed') this.outcome = 'failed (connection lost)';
    });
    ws.on('close', () => this.finish(this.outcome));
  }

  onEvent(message, handshake) {
    switch (message.event) {
      case 'connected':
        if (this.connected) return;
        this.connected = true;
        clearTimeout(handshake);
        this.maybePlay();
        return;
      case 'dtmf':
        this.onKey(message.digit);
        return;
      case 'hangup':
        this.outcome = 'hungup';
        this.ws.close(1000);
        return;
      case 'error':
        // while the caller waits in the menu: the operator (as ivrproto does)
        if (this.connected && this.menu && !this.chosen) this.choose('transfer_operator');
        return;
      default:
        // media and anything else: ignored, as the seed does
    }
  }

  /** Stream each menu option, once the menu and the connection are there. */
  maybePlay() {
    if (!this.menu || !this.connected) return;
    for (const item of this.menu) {
      this.send({
        callControlId: this.id,
        action: 'play',
        audio: AUDIO_BASE_URL + item.prompt,
        dtmf: { enabled: true, keys: this.keys },
      });
    }
    this.service.log('IVR session active. Waiting for DTMF or hangup...');
  }

  onKey(digit) {
    if (!this.menu || this.chosen) return;
    const selection = this.menu.find((m) => m.key === digit);
    if (selection) {
      this.service.log(`Caller selected: ${selection.action}`);
      this.choose(selection.action);
    } else {
      this.send({
        callControlId: this.id,
        action: 'play',
        audio: AUDIO_BASE_URL + 'invalid_selection.mp3',
        dtmf: { enabled: true, keys: this.keys },
      });
    }
  }

  choose(action) {
    this.chosen = true;
    this.send({
      callControlId: this.id,
      action: 'play',
      audio: AUDIO_BASE_URL + 'selection_confirmed.mp3',
      dtmf: { enabled: false },
    });
    this.timers.push(setTimeout(() => this.transfer(action), this.service.options.confirmDelayMs));
  }

  transfer(action) {
    if (this.send({ callControlId: this.id, action: 'transfer', target: `ext:${action}`, type: 'number' })) {
      this.outcome = 'transferred';
      this.service.stats.transfers[action] = (this.service.stats.transfers[action] || 0) + 1;
    }
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  finish(outcome) {
    if (this.done) return;
    this.done = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
    this.service.ended(this, outcome);
  }
}

module.exports = { Call, buildDynamicMenu };
