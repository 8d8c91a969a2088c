# The hosted checkout, in English. Every message here is in every language
# (a test says so); `{ $x }` are filled in by the page.

money = { $currency } { $amount }
brand-card = Card

## Pages and their states
title-checkout = Checkout
title-processing = Processing payment
heading-processing = Processing your payment…
lead-processing = This page updates by itself. Please do not pay again.
lead-bank-answer = Your bank's answer is on its way. This page updates by itself.
title-cancelling = Cancelling payment
heading-cancelling = Cancelling your payment…
lead-cancelling = No payment will be taken. This page updates by itself.
outcome-paid = Payment successful
outcome-authorised = Payment authorised
outcome-verified = Card verified
outcome-not-taken = Payment not taken
title-expired = Link expired
heading-expired = This payment link has expired
lead-expired = No payment was taken. Ask the merchant for a new link.
title-cancelled = Payment cancelled
heading-cancelled = This payment was cancelled
lead-cancelled = No payment was taken.
return-to-merchant = Return to the merchant
back-to-merchant = Back to the merchant
charged = Charged { $amount }
refunded = Refunded { $amount }
refunded-in-full = Refunded { $amount } (in full)
mandate-in-place = Your authorisation for future payments is in place.

## The card form
terms-heading = Authorisation for future payments
saved-heading = Your saved cards
saved-pay = { $action } with { $card }
saved-card = { $brand } •••• { $last4 } (expires { $expiry })
other-card-heading = Or pay with another card
card-number = Card number
expiry-label = Expiry (MM/YY)
expiry-placeholder = MM/YY
security-code = Security code
save-card = Save this card for future purchases
button-verify-authorise = Verify card and authorise
button-pay-authorise = Pay { $amount } and authorise
button-verify = Verify card
button-pay = Pay { $amount }
cancel-and-return = Cancel and return to { $merchant }
cancel-payment = Cancel payment
use-another-card = Use another card

## What the customer is told of a decline (only what they can act on)
decline-insufficient-funds = Your card has insufficient funds.
decline-expired = Your card has expired.
decline-other = Your card was declined.
decline-retry = { $reason } Please try again or use another card.

## The page's own checks, before the card is sent
check-number = Check the card number: it is not a valid card number.
check-expiry-format = Enter the expiry date as MM/YY.
check-expired = This card has expired.

## The vault's answers, by its code
card-incorrect-number = The card number is not a valid card number.
card-invalid-expiry = The expiry date is not valid.
card-expired = The card has expired.
card-invalid-cvc = The security code must be 3 or 4 digits.
card-refused = The card was not accepted. Check its number, expiry and security code.
expiry-must-look = The expiry date must look like MM/YY.
saved-card-refused = That saved card cannot be used here. Enter a card instead.

## 3-D Secure
title-challenge = Confirm with your bank
heading-challenge = Confirm this payment with your bank
sandbox-challenge = Test mode: this is the sandbox's 3-D Secure page, standing in for your bank's.
authenticate = Authenticate
fail-authentication = Fail authentication
bank-check-opens = Your bank's check opens here. Keep this page open.
bank-check-needs-script = Your bank's check needs JavaScript. Turn it on and reload this page, or use another card.
bank-check-unavailable = Your bank's check cannot be shown right now.

## When something is wrong
title-not-found = Page not found
title-try-again = Try again
title-please-try-again = Please try again
title-too-many-attempts = Too many attempts
title-too-many-requests = Too many requests
too-many-attempts = Please wait a minute before you try again. No payment was taken.
too-many-requests = Please wait a minute and reload this page.
cannot-load = We cannot load this page right now.
form-expired = This form has expired. Reload the page.
form-expired-card = This form has expired. Reload the page and enter your card again.
form-not-ours = This form is not one of ours.
cannot-pass-answer = We could not pass your bank's answer on. Reload the page.
cannot-cancel = We could not cancel right now. Reload the page.
cannot-start = We could not start your payment. No payment was taken.
cannot-process-card = We could not process your card right now. No payment was taken.

## The mandate's terms, in sentences
terms-charge = You authorise { $merchant } to charge this card { $amount }, { $when }.
terms-amount-exact = { $amount }
terms-amount-range = between { $min } and { $max }
terms-amount-up-to = up to { $max }
terms-amount-at-least = at least { $min }
terms-amount-any = amounts in { $currency } that you agree with them
terms-when-due = whenever a payment is due, without you being present
terms-every = { $unit ->
        [day] { $n ->
            [1] once every day
           *[other] once every { $n } days
        }
        [week] { $n ->
            [1] once every week
           *[other] once every { $n } weeks
        }
        [month] { $n ->
            [1] once every month
           *[other] once every { $n } months
        }
       *[year] { $n ->
            [1] once every year
           *[other] once every { $n } years
        }
    }
terms-on-weekday = on a { $day ->
        [1] Monday
        [2] Tuesday
        [3] Wednesday
        [4] Thursday
        [5] Friday
        [6] Saturday
       *[7] Sunday
    }
terms-on-month-day = on day { $day } of the month
terms-on-year-day = on day { $day } of the year
terms-weekend-adjusted = the nearest weekday when that falls on a weekend
terms-from-until = Charges may be made from { $start } until { $end }.
terms-from = Charges may be made from { $start }.
terms-until = Charges may be made until { $end }.
terms-max-count-total = { $n ->
        [1] At most one charge
       *[other] At most { $n } charges
    }, and no more than { $total } in total.
terms-max-count = { $n ->
        [1] At most one charge.
       *[other] At most { $n } charges.
    }
terms-max-total = No more than { $total } in total.
terms-cancel = You can cancel this authorisation at any time by contacting { $merchant }.
