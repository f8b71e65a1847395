"""Browser pages. Thin: a form validates shape, one service decides (or selectors read), the page
renders.

Every page is ``Cache-Control: no-store`` (`never_cache`), CSRF-protected, and refuses methods it
does not serve with 405 and ``Allow``. Pages other than the sign-in ones need a browser session (the
``__Host-sid`` cookie; per-request credentials are for the APIs); a one-time-password session is sent
to the password page until it sets a new password. Role checks come before anything else, so a
caller without the role gets 403 whatever it posts. Destructive actions are POST forms reached
through a confirmation page that works without JavaScript; a POST without the confirmation field
only shows that page.

Pages by area: `account` (sign in and out, password, two-factor), `sessions` (the dashboard, history,
my sessions, terminating), `api_keys`, `audit`, `devices` (known devices, new-sign-in notices);
`base` holds what they share (the `page` decorator, the sign-in redirect, rendering, list helpers).
May import services, the reads, forms, the middleware and the core; only the URLconf imports them.
"""
