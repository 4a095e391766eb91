// grantry settings page: Settings → Connections.
//
// Everything shown comes from the JSON API of the same origin (the browser sends the `token`
// cookie). No provider is named here: they come from GET /api/v1/providers. Data reaches the
// DOM only as text (textContent, attributes of our choosing, and http(s) URLs that were
// checked), never as markup.
(function () {
  'use strict';

  var PAGE_SUFFIX = '/settings/connections';
  var PENDING_KEY = 'grantry.pendingConnection';
  var CONFIRM_MS = 6000;

  // The API lives beside the page, also when the router is nested under a prefix.
  var pagePath = window.location.pathname.replace(/\/+$/, '');
  var base = pagePath.slice(-PAGE_SUFFIX.length) === PAGE_SUFFIX
    ? pagePath.slice(0, -PAGE_SUFFIX.length)
    : '';

  var providers = [];
  var isAdmin = false;

  function $(id) {
    return document.getElementById(id);
  }

  // el('p', {class: 'x'}, 'text', child…): strings become text nodes, never markup.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === null || value === undefined || value === false) {
          return;
        }
        node.setAttribute(name, value === true ? '' : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      append(node, arguments[i]);
    }
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) {
      return;
    }
    if (Array.isArray(child)) {
      child.forEach(function (c) { append(node, c); });
    } else if (typeof child === 'string' || typeof child === 'number') {
      node.appendChild(document.createTextNode(String(child)));
    } else {
      node.appendChild(child);
    }
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  function text(value) {
    return typeof value === 'string' ? value : '';
  }

  // An absolute http(s) URL, or null: nothing else may become a link, an image or a redirect.
  function safeUrl(value) {
    if (typeof value !== 'string' || value === '') {
      return null;
    }
    try {
      var url = new URL(value, window.location.href);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  // ---- the API -------------------------------------------------------------------------

  function api(method, path, body) {
    return request(method, base + '/api/v1' + path, body);
  }

  // `url` is a path of this origin (API paths, or the server's own Link targets).
  function request(method, url, body) {
    var init = {
      method: method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'Accept': 'application/json' }
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      return response.text().then(function (raw) {
        var data = null;
        if (raw) {
          try { data = JSON.parse(raw); } catch (e) { data = null; }
        }
        var code = null;
        if (!response.ok) {
          code = data && typeof data.error === 'string' ? data.error : 'http_' + response.status;
        }
        return { ok: response.ok, status: response.status, code: code, data: data, headers: response.headers };
      });
    }, function () {
      return { ok: false, status: 0, code: 'network', data: null, headers: null };
    });
  }

  function providerPath(id, rest) {
    return '/' + encodeURIComponent(id) + rest;
  }

  // ---- words a person understands ---------------------------------------------------------

  function explain(result, name) {
    var who = name || 'the service';
    switch (result.code) {
      case 'network':
        return 'The server could not be reached. Check your network connection and try again.';
      case 'unauthorized':
        return 'Your session has ended. Sign in again through your product, then come back to this page.';
      case 'forbidden':
        return 'Your account is not allowed to do that.';
      case 'access_denied':
        return 'You declined the request at ' + who + ', so nothing was connected. ' +
          'You can connect whenever you like.';
      case 'invalid_state':
        return 'This sign-in at ' + who + ' could not be completed: it was started too long ago, ' +
          'was already used, or was started in another session. Please connect again.';
      case 'authorization_failed':
        return who + ' did not accept the sign-in. Please try again; if it keeps failing, ' +
          'ask your administrator to check the integration.';
      case 'upstream_unavailable':
        return who + ' is not answering right now. Please try again in a few minutes.';
      case 'database_unavailable':
        return 'The service is temporarily unavailable. Please try again in a moment.';
      case 'not_connected':
        return 'There is no ' + who + ' connection to remove any more.';
      case 'needs_reauth':
        return who + ' needs you to approve the connection again.';
      default:
        return 'Something went wrong (' + (result.code || 'unknown error') + '). Please try again.';
    }
  }

  function showError(message) {
    var box = $('error');
    box.textContent = message;
    box.hidden = !message;
    if (message) {
      $('notice').hidden = true;
    }
  }

  function showNotice(message) {
    var box = $('notice');
    box.textContent = message;
    box.hidden = !message;
    if (message) {
      $('error').hidden = true;
    }
  }

  function signedOut() {
    $('loading').hidden = true;
    $('connections').hidden = true;
    $('admin').hidden = true;
    $('signed-out').hidden = false;
  }

  // ---- dates ------------------------------------------------------------------------------

  function parseDate(value) {
    if (typeof value !== 'string') {
      return null;
    }
    var date = new Date(value);
    return isNaN(date.getTime()) ? null : date;
  }

  function relative(date) {
    var seconds = Math.round((date.getTime() - Date.now()) / 1000);
    var units = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]];
    var fmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) {
        return fmt.format(Math.round(seconds / units[i][1]), units[i][0]);
      }
    }
    return fmt.format(seconds, 'second');
  }

  // A <time> element: the local date and time, and how far away it is.
  function when(value, withRelative) {
    var date = parseDate(value);
    if (!date) {
      return null;
    }
    var shown = date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
    if (withRelative) {
      shown += ' (' + relative(date) + ')';
    }
    return el('time', { datetime: date.toISOString(), title: date.toISOString() }, shown);
  }

  // ---- pieces of a card ---------------------------------------------------------------------

  function initials(name) {
    var letters = text(name).trim().split(/\s+/).map(function (w) { return w.charAt(0); }).join('');
    return (letters || '?').slice(0, 2).toUpperCase();
  }

  function avatar(url, name) {
    var fallback = el('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name));
    var src = safeUrl(url);
    if (!src) {
      return fallback;
    }
    var img = el('img', {
      class: 'avatar',
      src: src,
      alt: '',
      width: 32,
      height: 32,
      loading: 'lazy',
      referrerpolicy: 'no-referrer'
    });
    img.addEventListener('error', function () {
      if (img.parentNode) {
        img.parentNode.replaceChild(fallback, img);
      }
    });
    return img;
  }

  function chips(list, label) {
    var items = (Array.isArray(list) ? list : []).filter(function (s) { return typeof s === 'string'; });
    if (!items.length) {
      return el('span', { class: 'muted' }, 'none');
    }
    return el('ul', { class: 'chips', 'aria-label': label }, items.map(function (s) { return el('li', null, s); }));
  }

  function siteList(sites) {
    var list = (Array.isArray(sites) ? sites : []).filter(function (s) { return s && typeof s === 'object'; });
    if (!list.length) {
      return el('span', { class: 'muted' }, 'none');
    }
    return el('ul', { class: 'sites' }, list.map(function (site) {
      var name = text(site.name) || text(site.id) || 'Unnamed';
      var href = safeUrl(site.url);
      return el('li', { class: 'site', 'data-site-id': text(site.id) },
        avatar(site.avatar_url, name),
        el('span', null,
          el('span', { class: 'site-name' }, name),
          href ? [' ', el('a', { href: href, target: '_blank', rel: 'noopener noreferrer' }, text(site.url))] : null));
    }));
  }

  function account(acc) {
    if (!acc || typeof acc !== 'object') {
      return 'unknown';
    }
    var name = text(acc.name);
    var email = text(acc.email);
    if (name && email) {
      return name + ' (' + email + ')';
    }
    return name || email || text(acc.id) || 'unknown';
  }

  function fact(label, value) {
    if (value === null || value === undefined || value === '') {
      return null;
    }
    return [el('dt', null, label), el('dd', null, value)];
  }

  // A button that performs `action` while disabled, so one click is one request.
  function button(label, attrs, action) {
    var b = el('button', Object.assign({ type: 'button' }, attrs), label);
    b.addEventListener('click', function () {
      if (b.disabled) {
        return;
      }
      b.disabled = true;
      Promise.resolve(action(b)).then(function () {
        b.disabled = false;
      }, function (error) {
        b.disabled = false;
        showError('Something went wrong on this page: ' + String(error));
      });
    });
    return b;
  }

  // ---- a provider's card --------------------------------------------------------------------

  function stateOf(status) {
    if (!status || status.connected !== true) {
      return 'disconnected';
    }
    return status.status === 'needs_reauth' ? 'needs_reauth' : 'active';
  }

  var BADGES = {
    active: 'Connected',
    needs_reauth: 'Needs re-consent',
    disconnected: 'Not connected'
  };

  function renderCard(provider, status, problem) {
    var state = stateOf(status);
    var card = el('article', {
      class: 'card',
      'data-provider': provider.id,
      'data-state': state === 'active' ? 'connected' : state,
      'aria-labelledby': 'card-title-' + provider.id
    });
    var name = provider.name;
    card.appendChild(el('div', { class: 'card-head' },
      el('h3', { id: 'card-title-' + provider.id }, name),
      el('span', { class: 'badge badge-' + state, 'data-role': 'status' }, BADGES[state])));

    var actions = el('div', { class: 'actions' });
    if (problem) {
      card.appendChild(el('p', { class: 'warning' }, problem));
      card.appendChild(actions);
      actions.appendChild(button('Try again', { 'data-action': 'retry' }, function () {
        return refreshProvider(provider);
      }));
      return card;
    }

    if (state === 'disconnected') {
      card.appendChild(el('p', null,
        'Not connected. You will be sent to ' + name + ' to approve access, then brought back here.'));
      var facts = el('dl', { class: 'facts' });
      append(facts, fact('Access asked for', chips(provider.scopes, 'Scopes asked for')));
      card.appendChild(facts);
      actions.appendChild(button('Connect ' + name, { class: 'primary', 'data-action': 'connect' }, function () {
        return connect(provider);
      }));
    } else {
      if (state === 'needs_reauth') {
        card.appendChild(el('p', { class: 'warning' },
          name + ' no longer accepts this connection (it expired or was revoked). ' +
          'Reconnect to keep using it; nothing else is lost.'));
      }
      var dl = el('dl', { class: 'facts' });
      append(dl, [
        fact('Account', account(status.account)),
        fact('Sites', siteList(status.sites)),
        fact('Access granted', chips(status.scopes, 'Granted scopes')),
        fact('Connected', when(status.connected_at, false)),
        fact('Access token valid until', when(status.access_token_expires_at, true)),
        fact('Approval valid until', when(status.refresh_token_expires_at, true))
      ]);
      card.appendChild(dl);
      if (state === 'active') {
        card.appendChild(el('p', { class: 'muted small' },
          'The access token is renewed automatically; reconnect before the approval runs out.'));
      } else {
        actions.appendChild(button('Reconnect ' + name, { class: 'primary', 'data-action': 'reconnect' }, function () {
          return connect(provider);
        }));
      }
      actions.appendChild(disconnectButton(provider, actions));
    }
    card.appendChild(actions);
    return card;
  }

  // Disconnect asks for a confirmation inside the card.
  function disconnectButton(provider, actions) {
    var name = provider.name;
    var start = el('button', { type: 'button', class: 'danger', 'data-action': 'disconnect' }, 'Disconnect');
    start.addEventListener('click', function () {
      start.hidden = true;
      var cancel = el('button', { type: 'button', 'data-action': 'cancel' }, 'Cancel');
      var row = el('p', { class: 'confirm' },
        'Disconnect ' + name + '? The product loses access to your ' + name +
        ' account until you connect again.');
      var yes = button('Yes, disconnect', { class: 'danger primary', 'data-action': 'confirm-disconnect' }, function () {
        cancel.disabled = true;
        return disconnect(provider);
      });
      cancel.addEventListener('click', function () {
        row.remove();
        yes.remove();
        cancel.remove();
        start.hidden = false;
        start.focus();
      });
      actions.appendChild(row);
      actions.appendChild(yes);
      actions.appendChild(cancel);
      yes.focus();
    });
    return start;
  }

  function placeCard(provider, card) {
    var old = document.querySelector('.card[data-provider="' + CSS.escape(provider.id) + '"]');
    if (old) {
      old.replaceWith(card);
    } else {
      $('cards').appendChild(card);
    }
  }

  function refreshProvider(provider) {
    return api('GET', providerPath(provider.id, '/connection/status')).then(function (result) {
      if (result.code === 'unauthorized') {
        signedOut();
        return;
      }
      if (!result.ok) {
        placeCard(provider, renderCard(provider, null,
          'The state of this connection could not be read. ' + explain(result, provider.name)));
        return;
      }
      placeCard(provider, renderCard(provider, result.data, null));
    });
  }

  // ---- actions ------------------------------------------------------------------------------

  function connect(provider) {
    showError('');
    return api('POST', providerPath(provider.id, '/connection/authorize')).then(function (result) {
      if (!result.ok) {
        if (result.code === 'unauthorized') {
          signedOut();
        }
        showError('Could not start connecting ' + provider.name + '. ' + explain(result, provider.name));
        return;
      }
      var target = result.data && safeUrl(result.data.authorization_url);
      if (!target) {
        showError(provider.name + ' gave no usable address to approve the connection.');
        return;
      }
      try {
        window.sessionStorage.setItem(PENDING_KEY, JSON.stringify({
          provider: provider.id,
          state: text(result.data.state)
        }));
      } catch (e) {
        // Without storage the callback is matched by trying each provider.
      }
      window.location.assign(target);
      // Keep the button disabled while the browser leaves.
      return new Promise(function () {});
    });
  }

  function disconnect(provider) {
    showError('');
    return api('DELETE', providerPath(provider.id, '/connection')).then(function (result) {
      if (result.ok) {
        var revocation = result.headers && result.headers.get('grantry-revocation');
        var message = provider.name + ' is disconnected.';
        if (revocation === 'revoked') {
          message += ' Its access was revoked at ' + provider.name + ' too.';
        } else if (revocation === 'unsupported' && provider.revocation_hint) {
          message += ' ' + provider.name + ' cannot be told from here; to remove the app there ' +
            'too: ' + provider.revocation_hint;
        } else if (revocation === 'failed') {
          message += ' ' + provider.name + ' could not be told; you can also remove the app ' +
            'in your ' + provider.name + ' account settings.';
        }
        showNotice(message);
      } else if (result.code === 'unauthorized') {
        signedOut();
        return;
      } else {
        showError(explain(result, provider.name));
      }
      return Promise.all([refreshProvider(provider), refreshAdmin()]);
    });
  }

  // ---- the callback: the provider sends the person back here with ?code&state or ?error&state --

  function readPending() {
    try {
      var raw = window.sessionStorage.getItem(PENDING_KEY);
      window.sessionStorage.removeItem(PENDING_KEY);
      var pending = raw ? JSON.parse(raw) : null;
      return pending && typeof pending === 'object' ? pending : null;
    } catch (e) {
      return null;
    }
  }

  // Reads the callback parameters and removes them from the address bar at once: the code is
  // single use and must neither stay in the history nor be sent again by a reload.
  function takeCallback() {
    var params = new URLSearchParams(window.location.search);
    var keys = ['code', 'state', 'error', 'error_description', 'iss'];
    if (!keys.some(function (k) { return params.has(k); })) {
      return null;
    }
    var callback = {};
    keys.forEach(function (k) {
      var v = params.get(k);
      if (v) {
        callback[k] = v;
      }
      params.delete(k);
    });
    var rest = params.toString();
    window.history.replaceState(null, '', window.location.pathname + (rest ? '?' + rest : '') + window.location.hash);
    return callback;
  }

  function completeCallback(callback) {
    if (!callback.state || (!callback.code && !callback.error)) {
      showError('The sign-in came back incomplete, so nothing was connected. Please connect again.');
      return Promise.resolve();
    }
    var pending = readPending();
    var byId = {};
    providers.forEach(function (p) { byId[p.id] = p; });
    // The provider Connect was clicked for; without a record, try each: a state belongs to one
    // provider and is only used up by that one.
    var matched = pending && pending.state === callback.state && byId[pending.provider];
    var candidates = matched ? [matched] : providers.slice();
    var body = { state: callback.state };
    ['code', 'error', 'error_description', 'iss'].forEach(function (k) {
      if (callback[k]) {
        body[k] = callback[k];
      }
    });

    function attempt(i) {
      if (i >= candidates.length) {
        showError(explain({ code: 'invalid_state' }, candidates.length === 1 ? candidates[0].name : null));
        return Promise.resolve();
      }
      var provider = candidates[i];
      return api('POST', providerPath(provider.id, '/connection/callback'), body).then(function (result) {
        if (result.code === 'invalid_state' && !matched) {
          return attempt(i + 1);
        }
        if (result.ok) {
          var who = account(result.data && result.data.account);
          showNotice(provider.name + ' is connected' + (who !== 'unknown' ? ' as ' + who : '') + '.');
        } else if (result.code === 'unauthorized') {
          signedOut();
        } else {
          showError(explain(result, provider.name));
        }
      });
    }
    return attempt(0);
  }

  // ---- the admin section ---------------------------------------------------------------------

  // Connections per admin page; the server pages by user id and links the next page.
  var ADMIN_PAGE = 50;

  // The target of an RFC 8288 `Link: <…>; rel="next"` header, when it stays on this origin.
  function nextLink(headers) {
    var value = headers && headers.get('Link');
    if (!value) {
      return null;
    }
    var parts = value.split(',');
    for (var i = 0; i < parts.length; i++) {
      var match = /^\s*<([^>]*)>\s*;(.*)$/.exec(parts[i]);
      if (match && /(^|;)\s*rel\s*=\s*"?next"?\s*(;|$)/i.test(match[2])) {
        try {
          var url = new URL(match[1], window.location.href);
          return url.origin === window.location.origin ? url.pathname + url.search : null;
        } catch (e) {
          return null;
        }
      }
    }
    return null;
  }

  function adminRow(provider, c, block) {
    var state = stateOf(c);
    var sites = (Array.isArray(c.sites) ? c.sites : []).map(function (s) { return text(s && s.name); })
      .filter(Boolean).join(', ');
    var user = text(c.user_id);
    var remove = el('button', { type: 'button', class: 'danger', 'data-action': 'admin-remove', 'data-user': user }, 'Remove');
    var armed = null;
    var failure = text(c.last_failure);
    var row = el('tr', { 'data-user': user },
      el('td', null, user),
      el('td', null, account(c.account)),
      el('td', null, el('span', { class: 'badge badge-' + state }, BADGES[state]),
        failure ? el('div', { class: 'muted small' }, failure) : null),
      el('td', null, sites || '—'),
      el('td', null, when(c.connected_at, false) || '—'),
      el('td', null, when(c.refresh_token_expires_at, false) || '—'),
      el('td', { class: 'row-actions' }, remove));
    remove.addEventListener('click', function () {
      if (remove.disabled) {
        return;
      }
      if (!armed) {
        remove.textContent = 'Confirm removal';
        remove.classList.add('primary');
        armed = window.setTimeout(function () {
          armed = null;
          remove.textContent = 'Remove';
          remove.classList.remove('primary');
        }, CONFIRM_MS);
        return;
      }
      window.clearTimeout(armed);
      remove.disabled = true;
      api('DELETE', providerPath(provider.id, '/admin/connections/' + encodeURIComponent(user))).then(function (result) {
        if (result.ok || result.code === 'not_connected') {
          // The pages after this one start after a user id, so removing a row shifts nothing.
          row.remove();
        }
        if (result.ok) {
          showNotice('The ' + provider.name + ' connection of ' + user + ' is removed.');
        } else {
          remove.disabled = false;
          showError(explain(result, provider.name));
        }
        var emptied = !block.querySelector('tbody tr') && !block.querySelector('[data-action="admin-more"]');
        return Promise.all([emptied ? refreshAdminOf(provider) : null, refreshProvider(provider)]);
      });
    });
    return row;
  }

  // One provider's block: the first page, then "Show more" while the server links a next page.
  function adminBlock(provider, result) {
    var block = el('div', { class: 'admin-block', 'data-admin-provider': provider.id },
      el('h3', null, provider.name));
    if (!result.ok || !Array.isArray(result.data)) {
      block.appendChild(el('p', { class: 'warning' }, 'The list could not be read. ' + explain(result, provider.name)));
      return block;
    }
    if (!result.data.length) {
      block.appendChild(el('p', { class: 'muted', 'data-role': 'empty' }, 'No one has connected ' + provider.name + ' yet.'));
      return block;
    }
    var body = el('tbody', null);
    var shown = el('p', { class: 'muted small', 'data-role': 'shown', 'aria-live': 'polite' });
    var more = el('div', { class: 'actions' });
    block.appendChild(el('div', { class: 'table-wrap' },
      el('table', null,
        el('thead', null, el('tr', null,
          ['User', 'Account', 'Status', 'Sites', 'Connected', 'Approval valid until', ''].map(function (h) {
            return el('th', { scope: 'col' }, h);
          }))),
        body)));
    block.appendChild(shown);
    block.appendChild(more);

    function add(page, next) {
      page.forEach(function (c) {
        if (c && typeof c === 'object') {
          body.appendChild(adminRow(provider, c, block));
        }
      });
      var count = body.querySelectorAll('tr').length;
      shown.textContent = count === 1 ? 'Showing 1 connection' : 'Showing ' + count + ' connections';
      shown.textContent += next ? ', more below.' : '.';
      clear(more);
      if (next) {
        more.appendChild(button('Show more', { 'data-action': 'admin-more' }, function () {
          return request('GET', next).then(function (result) {
            if (result.code === 'unauthorized') {
              signedOut();
              return;
            }
            if (!result.ok || !Array.isArray(result.data)) {
              showError('More ' + provider.name + ' connections could not be read. ' + explain(result, provider.name));
              add([], next);
              return;
            }
            add(result.data, nextLink(result.headers));
            // The button that had the focus is gone: hand it to the next one, or the new rows.
            var again = more.querySelector('button');
            var target = again || body.querySelector('tr:last-child button');
            if (target) {
              target.focus();
            }
          });
        }));
      }
    }
    add(result.data, nextLink(result.headers));
    return block;
  }

  function firstAdminPage(provider) {
    return api('GET', providerPath(provider.id, '/admin/connections?limit=' + ADMIN_PAGE));
  }

  // Reloads one provider's block from its first page.
  function refreshAdminOf(provider) {
    return firstAdminPage(provider).then(function (result) {
      var old = document.querySelector('[data-admin-provider="' + CSS.escape(provider.id) + '"]');
      var block = adminBlock(provider, result);
      if (old) {
        old.replaceWith(block);
      } else {
        $('admin-lists').appendChild(block);
      }
    });
  }

  // Learns the role by asking: 403 on the admin list means "not an admin".
  function refreshAdmin() {
    if (!providers.length) {
      return Promise.resolve();
    }
    return Promise.all(providers.map(firstAdminPage)).then(function (results) {
      isAdmin = results.some(function (r) { return r.ok; });
      var lists = $('admin-lists');
      clear(lists);
      $('admin').hidden = !isAdmin;
      if (!isAdmin) {
        return;
      }
      results.forEach(function (result, i) {
        lists.appendChild(adminBlock(providers[i], result));
      });
    });
  }

  // ---- start --------------------------------------------------------------------------------

  function start() {
    var callback = takeCallback();
    return api('GET', '/providers').then(function (result) {
      if (result.code === 'unauthorized') {
        signedOut();
        return;
      }
      if (!result.ok || !Array.isArray(result.data)) {
        $('loading').hidden = true;
        showError('Your connections could not be loaded. ' + explain(result, null));
        return;
      }
      providers = result.data.filter(function (p) {
        return p && typeof p.id === 'string' && p.id !== '';
      }).map(function (p) {
        return { id: p.id, name: text(p.name) || p.id, scopes: Array.isArray(p.scopes) ? p.scopes : [] };
      });
      var ready = callback ? completeCallback(callback) : Promise.resolve();
      return ready.then(function () {
        $('loading').hidden = true;
        if ($('signed-out').hidden === false) {
          return;
        }
        $('connections').hidden = false;
        $('no-providers').hidden = providers.length > 0;
        // Placeholders keep the cards in the providers' order whatever answers first.
        providers.forEach(function (p) {
          $('cards').appendChild(el('article', { class: 'card', 'data-provider': p.id, 'data-state': 'loading' },
            el('div', { class: 'card-head' }, el('h3', null, p.name)),
            el('p', { class: 'muted' }, 'Loading…')));
        });
        return Promise.all(providers.map(refreshProvider).concat([refreshAdmin()]));
      });
    }).catch(function (error) {
      $('loading').hidden = true;
      showError('Something went wrong on this page: ' + String(error));
    }).then(function () {
      $('app').setAttribute('aria-busy', 'false');
      document.body.setAttribute('data-ready', 'true');
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
