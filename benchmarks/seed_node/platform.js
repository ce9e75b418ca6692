'use strict';
/**
 * The seed's two REST requests, in its shape: getAccessToken (the OAuth
 * client-credentials grant, cached) and fetchUserProfile (the profile by
 * external id), over plain Node http/https with a keep-alive agent.
 *
 * What differs from the seed (its bugs, fixed):
 * - the credentials go in HTTP Basic, each form-urlencoded first (RFC 6749
 *   section 2.3.1), not in the form body next to the grant;
 * - concurrent calls share one token fetch instead of each starting one;
 * - the cache keeps a margin of min(5 s, half the lifetime), so a token
 *   that lives under 5 s is still used;
 * - a 429 is retried a bounded number of times (the seed's profile fetch
 *   recursed without end), Retry-After is capped, and "Retry-After" given
 *   as an HTTP date is not multiplied as a number;
 * - a 401 on the profile drops the token and retries once with a new one
 *   (the seed threw, and its caller then exited the process);
 * - every request has a timeout, and bodies are bounded;
 * - no caller id, token or secret is ever logged.
 */

const http = require('http');
const https = require('https');

const REQUEST_TIMEOUT_MS = 5000;
const MAX_BODY = 256 * 1024;
const MAX_RETRY_AFTER_S = 10;
const SCOPE = 'profile:read callcontrol:inbound callcontrol:media';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

class Platform {
  /**
   * @param {string} baseUrl GENESYS_BASE_URL (https, or http to loopback only)
   * @param {string} clientId
   * @param {string} clientSecret
   */
  constructor(baseUrl, clientId, clientSecret) {
    this.base = new URL(baseUrl.replace(/\/+$/, ''));
    if (this.base.protocol === 'http:' && !LOOPBACK.has(this.base.hostname)) {
      throw new Error('plain http is allowed to a loopback host only');
    }
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') {
      throw new Error('GENESYS_BASE_URL must be http(s)');
    }
    this.client = this.base.protocol === 'https:' ? https : http;
    this.agent = new this.client.Agent({ keepAlive: true, maxSockets: 64 });
    const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
    this.basic = 'Basic ' + Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64');
    this.tokenCache = { accessToken: null, expiresAt: 0 };
    this.inflight = null;
    this.stats = { requests: 0, failures: 0 };
  }

  /** The Call Control WebSocket URL. */
  get wsUrl() {
    const scheme = this.base.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${this.base.host}${this.base.pathname.replace(/\/$/, '')}/api/v2/callcontrol/websocket`;
  }

  /** Whether a token is cached and still good. */
  hasToken() {
    return this.tokenCache.accessToken !== null && Date.now() < this.tokenCache.expiresAt;
  }

  /** Drop the cached token (the API refused it). */
  invalidate(token) {
    if (this.tokenCache.accessToken === token) this.tokenCache.accessToken = null;
  }

  /**
   * One request; resolves to {status, headers, body} (body a string).
   */
  request(method, path, headers, body) {
    return new Promise((resolve, reject) => {
      const req = this.client.request({
        host: this.base.hostname,
        port: this.base.port || undefined,
        path,
        method,
        headers,
        agent: this.agent,
      }, (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_BODY) {
            req.destroy(new Error('answer body too large'));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => resolve({
          status: res.statusCode,
          headers: res.headers,
          body: chunks.length === 1 ? chunks[0].toString() : Buffer.concat(chunks).toString(),
        }));
        res.on('error', reject);
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }

  /**
   * The seed's getAccessToken: the cached token, or one fetch shared by
   * every caller waiting for it.
   */
  getAccessToken() {
    if (this.hasToken()) return Promise.resolve(this.tokenCache.accessToken);
    if (!this.inflight) {
      this.inflight = this.fetchToken().finally(() => { this.inflight = null; });
    }
    return this.inflight;
  }

  async fetchToken() {
    const body = new URLSearchParams({ grant_type: 'client_credentials', scope: SCOPE }).toString();
    const headers = {
      Authorization: this.basic,
      'Content-Type': 'application/x-www-form-urlencoded',
      Accept: 'application/json',
      'Content-Length': Buffer.byteLength(body),
    };
    const maxAttempts = 4;
    for (let attempt = 1; ; attempt++) {
      let response;
      const started = Date.now();
      try {
        this.stats.requests++;
        response = await this.request('POST', '/oauth/token', headers, body);
      } catch (error) {
        if (attempt >= maxAttempts) { this.stats.failures++; throw new Error('token request failed'); }
        await sleep(backoff(attempt));
        continue;
      }
      if (response.status === 200) {
        const data = parseJson(response.body);
        if (!data || typeof data.access_token !== 'string' || !data.access_token
            || typeof data.expires_in !== 'number' || data.expires_in < 0) {
          this.stats.failures++;
          throw new Error('malformed token answer');
        }
        const lifetime = data.expires_in * 1000;
        this.tokenCache.accessToken = data.access_token;
        this.tokenCache.expiresAt = started + lifetime - Math.min(5000, lifetime / 2);
        return data.access_token;
      }
      const retryable = response.status === 429 || response.status >= 500;
      if (!retryable || attempt >= maxAttempts) {
        this.stats.failures++;
        throw new Error(`token request refused (HTTP ${response.status})`);
      }
      await sleep(response.status === 429 ? retryAfter(response.headers, attempt) : backoff(attempt));
    }
  }

  /**
   * The seed's fetchUserProfile: the profile object, or null when there
   * is none (404).  Throws on any failure (the caller gets the default menu).
   */
  async fetchUserProfile(externalId, token, retried = false, throttled = 0) {
    const path = `${this.base.pathname.replace(/\/$/, '')}/api/v2/profiles/external/${encodeURIComponent(externalId)}`;
    const response = await this.request('GET', path, {
      Authorization: `Bearer ${token}`,
      Accept: 'application/json',
    });
    if (response.status === 200) {
      const profile = parseJson(response.body);
      if (!profile || typeof profile !== 'object' || typeof profile.attributes !== 'object'
          || profile.attributes === null) {
        throw new Error('malformed profile');
      }
      return profile;
    }
    if (response.status === 404) return null;
    if (response.status === 401 && !retried) {
      this.invalidate(token);
      return this.fetchUserProfile(externalId, await this.getAccessToken(), true, throttled);
    }
    if (response.status === 429 && throttled < 1) {
      await sleep(retryAfter(response.headers, 1));
      return this.fetchUserProfile(externalId, token, retried, throttled + 1);
    }
    throw new Error(`profile fetch failed (HTTP ${response.status})`);
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    return null;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Jittered exponential backoff: about 0.5, 1, 2 s. */
function backoff(attempt) {
  return 250 * Math.pow(2, attempt) * (0.5 + Math.random() / 2);
}

/** Retry-After in ms (seconds or an HTTP date), capped; else the backoff. */
function retryAfter(headers, attempt) {
  const value = headers['retry-after'];
  let seconds = Number(value);
  if (value !== undefined && Number.isNaN(seconds)) {
    seconds = (Date.parse(value) - Date.now()) / 1000;
  }
  if (value === undefined || !Number.isFinite(seconds) || seconds < 0) return backoff(attempt);
  return Math.min(seconds, MAX_RETRY_AFTER_S) * 1000;
}

module.exports = { Platform };
