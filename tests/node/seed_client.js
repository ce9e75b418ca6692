// The seed document's own client: the "Complete Working Example" of
// shared/seed/000_e043450be6fc4faf.txt, copied verbatim (its logic and its
// bugs included: it is the reference client), run by tests/test_seed_client.py
// against the project's platform emulator.
//
// Only two changes, both marked "TEST CHANGE":
// - dotenv is optional, so that only `ws` must be installed;
// - the call id and external id come from the command line
//   (node seed_client.js <callControlId> <externalId>) instead of the
//   hard-coded runIVRSession('call-12345-abcde', 'CRM-USER-98765').
//
// Left as the seed has it: with GENESYS_BASE_URL=http://127.0.0.1:PORT the
// WebSocket URL stays http://..., which ws >= 8.14 accepts (it maps http: to
// ws:), hence "ws": "^8.14.0" in package.json; and the 10 s handshake timer
// is never cleared, so the process lingers about 10 s after the call (the
// test kills it once the emulator has recorded the end of the call).

// TEST CHANGE: dotenv is optional (the seed: require('dotenv').config();).
try { require('dotenv').config(); } catch {}
const WebSocket = require('ws');

const GENESYS_BASE_URL = process.env.GENESYS_BASE_URL || 'https://api.us-east-1.mypurecloud.com';
const CLIENT_ID = process.env.CLIENT_ID;
const CLIENT_SECRET = process.env.CLIENT_SECRET;
const AUDIO_BASE_URL = process.env.AUDIO_BASE_URL || 'https://example.com/ivr/audio/';

let tokenCache = { accessToken: null, expiresAt: 0 };

async function getAccessToken() {
  const now = Date.now();
  if (tokenCache.accessToken && now < tokenCache.expiresAt) return tokenCache.accessToken;

  const params = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    scope: 'profile:read callcontrol:inbound callcontrol:media'
  });

  try {
    const response = await fetch(`${GENESYS_BASE_URL}/oauth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: params
    });

    if (!response.ok) {
      const errorText = await response.text();
      throw new Error(`OAuth failed: ${response.status} ${errorText}`);
    }

    const data = await response.json();
    tokenCache.accessToken = data.access_token;
    tokenCache.expiresAt = now + (data.expires_in * 1000) - 5000;
    return tokenCache.accessToken;
  } catch (error) {
    console.error('Authentication error:', error.message);
    throw error;
  }
}

async function fetchUserProfile(externalId, token) {
  const response = await fetch(`${GENESYS_BASE_URL}/api/v2/profiles/external/${encodeURIComponent(externalId)}`, {
    method: 'GET',
    headers: { 'Authorization': `Bearer ${token}`, 'Accept': 'application/json' }
  });

  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`Profile fetch failed: ${response.status}`);
  return await response.json();
}

function buildDynamicMenu(profile) {
  const menu = [];
  if (profile?.attributes?.membership_level === 'premium') {
    menu.push({ key: '1', prompt: 'premium_priority.mp3', action: 'transfer_premium' });
  }
  if (profile?.attributes?.open_tickets > 0) {
    menu.push({ key: '2', prompt: 'ticket_status.mp3', action: 'play_ticket_info' });
  }
  menu.push({ key: '0', prompt: 'general_operator.mp3', action: 'transfer_operator' });
  return menu;
}

async function runIVRSession(callControlId, externalId) {
  try {
    const token = await getAccessToken();
    const profile = await fetchUserProfile(externalId, token);
    console.log(`Profile loaded for ${externalId}:`, profile ? 'Found' : 'Not found');

    const wsUrl = `${GENESYS_BASE_URL.replace('https://', 'wss://')}/api/v2/callcontrol/websocket`;
    const ws = new WebSocket(wsUrl, {
      headers: { 'Authorization': `Bearer ${token}`, 'Accept': 'application/json' }
    });

    await new Promise((resolve, reject) => {
      ws.on('open', () => {
        ws.send(JSON.stringify({
          callControlId,
          media: 'audio',
          capabilities: ['play', 'dtmf', 'transfer', 'hangup']
        }));
      });

      ws.on('message', (data) => {
        const msg = JSON.parse(data.toString());
        if (msg.event === 'connected') resolve();
        else if (msg.event === 'error') reject(new Error(msg.message));
      });

      ws.on('error', reject);
      setTimeout(() => { ws.close(); reject(new Error('Connection timeout')); }, 10000);
    });

    const menu = buildDynamicMenu(profile);

    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.event === 'dtmf') {
        const selection = menu.find(m => m.key === msg.digit);
        if (selection) {
          ws.send(JSON.stringify({ callControlId, action: 'play', audio: `${AUDIO_BASE_URL}confirmed.mp3`, dtmf: { enabled: false } }));
          setTimeout(() => {
            ws.send(JSON.stringify({ callControlId, action: 'transfer', target: `ext:${selection.action}`, type: 'number' }));
            ws.close();
          }, 1500);
        } else {
          ws.send(JSON.stringify({ callControlId, action: 'play', audio: `${AUDIO_BASE_URL}invalid.mp3`, dtmf: { enabled: true } }));
        }
      }
    });

    for (const item of menu) {
      ws.send(JSON.stringify({
        callControlId,
        action: 'play',
        audio: `${AUDIO_BASE_URL}${item.prompt}`,
        dtmf: { enabled: true, keys: menu.map(m => m.key) }
      }));
    }

    console.log('IVR session active. Waiting for DTMF or hangup...');
  } catch (error) {
    console.error('IVR session failed:', error.message);
    process.exit(1);
  }
}

// Example execution
// TEST CHANGE: ids from the command line (the seed: runIVRSession('call-12345-abcde', 'CRM-USER-98765')).
runIVRSession(process.argv[2], process.argv[3]).catch(console.error);
